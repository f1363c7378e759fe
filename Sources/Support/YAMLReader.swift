public import Yams
internal import Foundation
#if canImport(Glibc)
public import Glibc
#endif

/// A YAML file that cannot be used: names the file, the line and column,
/// the place in the document, and what is wrong, on one line:
/// `config.yaml:12:14: providers.aws.shim.command: expected a string`.
public struct YAMLFileError: Error, Hashable, Sendable, CustomStringConvertible {
    public var file: String
    /// 1-based; 0 when the problem is the whole file.
    public var line: Int
    public var column: Int
    /// e.g. `instances[2].timeline[1].state`; empty for the whole document.
    public var place: String
    public var problem: String

    public init(file: String, line: Int = 0, column: Int = 0, place: String = "", problem: String) {
        self.file = file
        self.line = line
        self.column = column
        self.place = place
        self.problem = problem
    }

    /// One line whatever the parts hold: control characters (a newline in
    /// a quoted value, a parser's multi-line report) are escaped.
    public var description: String {
        let location = line > 0 ? "\(file):\(line):\(column)" : file
        return TextEscaping.oneLine(place.isEmpty ? "\(location): \(problem)" : "\(location): \(place): \(problem)")
    }
}

/// Walks a YAML node tree so that every error carries the file, line and
/// place. Documents (the fake scenario, the controller config) are read by
/// extensions of this type.
public struct YAMLReader: Sendable {
    public let file: String

    public init(file: String) { self.file = file }

    /// The largest file ``load(path:_:)`` reads.
    public static let maxFileBytes = 16 << 20

    /// Reads and parses the file at `path`, then hands its root to `read`.
    /// Errors name the file by its absolute path (a relative `path` is
    /// resolved against the working directory first), so that a message
    /// from a process started elsewhere still says which file it read.
    public static func load<T>(path: String, _ read: (YAMLReader, Node) throws(YAMLFileError) -> T) throws(YAMLFileError) -> T {
        let file = absolute(path)
        return try parse(readFile(path: file), file: file, read)
    }

    /// `path` made absolute against the working directory (and tidied:
    /// `.` and `..` resolved); an absolute path as it is.
    public static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath + "/" + path).standardizedFileURL.path
    }

    /// How a ``YAMLFileError`` from ``readFile(path:inspect:)`` begins when
    /// the file could not be opened; the system's reason follows.
    public static let cannotOpenProblem = "cannot read the file: "

    /// Reads the file at `path` through one descriptor: only a regular
    /// file of sane size (a FIFO, a device or /dev/stdin named by mistake
    /// would block or never end), and `inspect` sees the `fstat` of the very
    /// file that is then read, so a check there cannot be raced by path.
    public static func readFile(
        path: String,
        inspect: (stat) throws(YAMLFileError) -> Void = { _ in }
    ) throws(YAMLFileError) -> String {
        let descriptor = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw YAMLFileError(file: path, problem: cannotOpenProblem + String(cString: strerror(errno)))
        }
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw YAMLFileError(file: path, problem: "cannot stat the file: \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw YAMLFileError(file: path, problem: "not a regular file")
        }
        guard info.st_size <= maxFileBytes else {
            throw YAMLFileError(file: path, problem: "the file has \(info.st_size) bytes; at most \(maxFileBytes) are read")
        }
        try inspect(info)
        let data: Data?
        do {
            data = try handle.readToEnd()
        } catch {
            throw YAMLFileError(file: path, problem: "cannot read the file: \(error.localizedDescription)")
        }
        guard let text = String(data: data ?? Data(), encoding: .utf8) else {
            throw YAMLFileError(file: path, problem: "the file is not UTF-8 text")
        }
        return text
    }

    /// Parses `text` (YAML or JSON); `file` names it in errors.
    public static func parse<T>(_ text: String, file: String, _ read: (YAMLReader, Node) throws(YAMLFileError) -> T) throws(YAMLFileError) -> T {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            switch error {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
                throw YAMLFileError(file: file, line: mark.line, column: mark.column, problem: "not valid YAML: \(problem)")
            case .reader(let problem, let offset, _, _):
                // Yams reports a byte offset; name its line and column.
                let place = offset.map { Self.lineAndColumn(ofByte: $0, in: text) } ?? (line: 0, column: 0)
                throw YAMLFileError(file: file, line: place.line, column: place.column, problem: "not valid YAML: \(problem)")
            case .duplicatedKeysInMapping(let duplicates, let context):
                throw YAMLFileError(
                    file: file, line: context.mark.line, column: context.mark.column,
                    problem: "not valid YAML: duplicated keys \(duplicates.joined(separator: ", "))"
                )
            default:
                throw YAMLFileError(file: file, problem: "not valid YAML: \(error)")
            }
        } catch {
            throw YAMLFileError(file: file, problem: "not YAML or JSON: \(error)")
        }
        guard let root else { throw YAMLFileError(file: file, problem: "the file is empty") }
        return try read(YAMLReader(file: file), root)
    }

    /// 1-based line and column of byte `offset` of `text`'s UTF-8.
    static func lineAndColumn(ofByte offset: Int, in text: String) -> (line: Int, column: Int) {
        var line = 1
        var column = 1
        for byte in text.utf8.prefix(offset) {
            if byte == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80 {
                column += 1
            }
        }
        return (line, column)
    }

    public func fail(_ node: Node?, _ place: String, _ problem: String) -> YAMLFileError {
        YAMLFileError(file: file, line: node?.mark?.line ?? 0, column: node?.mark?.column ?? 0, place: place, problem: problem)
    }

    /// A mapping's entries, rejecting keys outside `allowed`.
    public func mapping(_ node: Node, _ place: String, allowed: [String]) throws(YAMLFileError) -> [String: Node] {
        guard case .mapping(let mapping) = node else {
            throw fail(node, place, "expected a mapping with keys \(allowed.joined(separator: ", "))")
        }
        var entries: [String: Node] = [:]
        for (key, value) in mapping {
            guard let name = key.string else { throw fail(key, place, "keys must be strings") }
            guard allowed.contains(name) else {
                throw fail(key, place, "unknown key \"\(name)\" (expected one of: \(allowed.joined(separator: ", ")))")
            }
            guard entries[name] == nil else { throw fail(key, place, "key \"\(name)\" appears twice") }
            entries[name] = value
        }
        return entries
    }

    /// A mapping whose keys are names chosen by the author (e.g. provider
    /// names), in document order.
    public func namedEntries(_ node: Node, _ place: String) throws(YAMLFileError) -> [(name: String, key: Node, value: Node)] {
        guard case .mapping(let mapping) = node else { throw fail(node, place, "expected a mapping of names") }
        var seen: Set<String> = []
        var entries: [(name: String, key: Node, value: Node)] = []
        for (key, value) in mapping {
            guard let name = key.string else { throw fail(key, place, "keys must be strings") }
            guard seen.insert(name).inserted else { throw fail(key, place, "\"\(name)\" appears twice") }
            entries.append((name, key, value))
        }
        return entries
    }

    public func sequence(_ node: Node, _ place: String) throws(YAMLFileError) -> [Node] {
        guard case .sequence(let sequence) = node else { throw fail(node, place, "expected a list") }
        return Array(sequence)
    }

    public func string(_ node: Node, _ place: String) throws(YAMLFileError) -> String {
        guard case .scalar(let scalar) = node else { throw fail(node, place, "expected a string") }
        return scalar.string
    }

    public func bool(_ node: Node, _ place: String) throws(YAMLFileError) -> Bool {
        switch try string(node, place).lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        case let other: throw fail(node, place, "expected true or false, not \"\(other)\"")
        }
    }

    public func unsigned(_ node: Node, _ place: String) throws(YAMLFileError) -> UInt64 {
        guard let value = UInt64(try string(node, place)) else { throw fail(node, place, "expected a whole number ≥ 0") }
        return value
    }

    public func number(_ node: Node, _ place: String) throws(YAMLFileError) -> Double {
        guard let value = Double(try string(node, place)), value.isFinite else { throw fail(node, place, "expected a number") }
        return value
    }

    /// "90s", "1.5s", "250ms", "2m", "1h", "500us", or a plain number of seconds.
    public func duration(_ node: Node, _ place: String) throws(YAMLFileError) -> Duration {
        let text = try string(node, place).trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("s", 1), ("m", 60), ("h", 3600)]
        var number = text
        var scale = 1.0
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            number = String(text.dropLast(suffix.count))
            scale = factor
            break
        }
        guard let value = Double(number), value >= 0, value.isFinite else {
            throw fail(node, place, "expected a duration such as 90s, 250ms or 2m, not \"\(text)\"")
        }
        return .nanoseconds(Int64((value * scale * 1e9).rounded()))
    }

    public func stringMap(_ node: Node, _ place: String) throws(YAMLFileError) -> [String: String] {
        guard case .mapping(let mapping) = node else { throw fail(node, place, "expected a mapping of strings") }
        var result: [String: String] = [:]
        for (key, value) in mapping {
            guard let name = key.string else { throw fail(key, place, "keys must be strings") }
            result[name] = try string(value, "\(place).\(name)")
        }
        return result
    }

    public func stringList(_ node: Node, _ place: String) throws(YAMLFileError) -> [String] {
        var result: [String] = []
        for (index, item) in try sequence(node, place).enumerated() {
            result.append(try string(item, "\(place)[\(index)]"))
        }
        return result
    }

    /// Picks one of `choices` by name (case-insensitive, - and _ alike).
    public func choice<T>(_ node: Node, _ place: String, _ choices: [(String, T)]) throws(YAMLFileError) -> T {
        let text = try string(node, place)
        let wanted = text.lowercased().replacingOccurrences(of: "_", with: "-")
        guard let match = choices.first(where: { $0.0 == wanted }) else {
            throw fail(node, place, "unknown value \"\(text)\" (expected one of: \(choices.map(\.0).joined(separator: ", ")))")
        }
        return match.1
    }
}
