public import Core
internal import ControlAPI
internal import Foundation
public import Support
internal import Yams
#if canImport(Glibc)
internal import Glibc
#endif

/// `instancepoller check-config FILE`: what the controller would refuse or
/// trip over in a config, every problem found rather than the first. The
/// config is read as ``ControllerConfig/load(path:environment:)`` reads it
/// (the same trust rules, the same readers, credential files and the
/// metrics token read and checked); a section with a problem is left out
/// and the rest read again, so one mistake does not hide the next. Then
/// what start-up would meet: the shim executables, the store's directory,
/// the PostgreSQL password file, the credential key file and the runtime
/// directory (without taking it: a running controller is not disturbed).
public struct ConfigCheck: Sendable {
    /// One problem: where (a line of the config when it has one) and what.
    public struct Problem: Hashable, Sendable, CustomStringConvertible {
        public var file: String
        /// 1-based; 0 when no line is known.
        public var line: Int
        public var problem: String

        public init(file: String, line: Int, problem: String) {
            self.file = file
            self.line = line
            self.problem = problem
        }

        /// `FILE:LINE: problem`, or `FILE: problem`; one line.
        public var description: String {
            TextEscaping.oneLine(line > 0 ? "\(file):\(line): \(problem)" : "\(file): \(problem)")
        }
    }

    public var file: String
    public var problems: [Problem] = []
    /// Worth saying, not wrong (e.g. inline secrets others can read).
    public var warnings: [String] = []
    /// The config as read, sections with a problem left at their defaults;
    /// nil when not even that could be read (not YAML, no providers).
    public var config: ControllerConfig?
    /// Top-level sections left out because of a problem in them.
    public var skipped: Set<String> = []
    /// Providers left out because of a problem in them.
    public var brokenProviders: Set<String> = []
    /// The runtime directory is held by a running controller (its pid
    /// when it wrote it).
    public var runtimeDirectoryHolder: Int32?
    public var runtimeDirectoryInUse = false
    /// The line of each credential's entry, by `provider/name`.
    public var credentialLines: [String: Int] = [:]

    /// Thrown when the file cannot be read at all (missing, unreadable, a
    /// directory): a usage error rather than a problem in a config.
    public struct Unreadable: Error, CustomStringConvertible {
        public var description: String
    }

    /// Checks the config at `path`.
    ///
    /// - Throws: ``Unreadable`` when the file cannot be opened.
    public static func run(path: String, environment: [String: String]? = nil) throws(Unreadable) -> ConfigCheck {
        let environment = environment ?? ProcessInfo.processInfo.environment
        var check = ConfigCheck(file: path)
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw Unreadable(description: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else { throw Unreadable(description: "\(path) is not a regular file") }
        guard access(path, R_OK) == 0 else { throw Unreadable(description: "cannot read \(path): \(String(cString: strerror(errno)))") }

        // The file's own trust (owner, mode, directory) as the controller
        // checks it; the rest is checked whatever it says.
        let text: String
        var mode: mode_t = info.st_mode & 0o7777
        do {
            (text, mode) = try ControllerConfig.readTrusted(path)
        } catch {
            check.add(error)
            do {
                text = try YAMLReader.readFile(path: path)
            } catch {
                check.add(error)
                return check
            }
        }
        do {
            try YAMLReader.parse(text, file: path) { reader, root throws(YAMLFileError) in
                check.read(root, reader: reader, environment: environment, mode: mode)
            }
        } catch {
            check.add(error)
            return check
        }
        if let config = check.config { check.checkStartUp(config, environment: environment) }
        return check
    }

    /// The line of the mapping key at `path` in the file (e.g. providers,
    /// aws), or of the deepest key found on the way; 0 when none.
    public func line(ofKeys path: [String]) -> Int {
        KeyLines(file: file).line(of: path)
    }

    mutating func add(_ error: YAMLFileError) {
        let place = error.place.isEmpty ? "" : "\(error.place): "
        add(Problem(file: error.file, line: error.line, problem: place + error.problem))
    }

    mutating func add(_ problem: Problem) {
        if !problems.contains(problem) { problems.append(problem) }
    }

    /// Reads the config, leaving out each section (or provider) with a
    /// problem and reading the rest again; credentials each on their own.
    mutating func read(_ root: Node, reader: YAMLReader, environment: [String: String], mode: mode_t) {
        guard case .mapping(var top) = root else {
            add(reader.fail(root, "", "expected a mapping with keys such as store, runtime_directory, providers"))
            return
        }
        let credentialsNode = top["credentials"]
        top = Self.removing(["credentials"], from: top)
        var providerNames: [String] = []
        if let providers = top["providers"], let entries = try? reader.namedEntries(providers, "providers") {
            providerNames = entries.map(\.name)
        }
        // Each round either reads it or leaves one more piece out.
        for _ in 0...(top.count + providerNames.count + 2) {
            do {
                config = try reader.controllerConfig(.mapping(top), environment: environment)
                break
            } catch {
                add(error)
                guard let smaller = leavingOut(error, from: top, reader: reader) else { break }
                top = smaller
            }
        }
        guard var config else { return }
        // Credentials, each alone: one that is wrong does not hide the next.
        if let credentialsNode {
            do {
                for (index, item) in try reader.sequence(credentialsNode, "credentials").enumerated() {
                    let place = "credentials[\(index)]"
                    do throws(YAMLFileError) {
                        let credential = try reader.credential(item, place, providers: providerNames)
                        if item["attributes"] != nil { config.hasInlineSecrets = true }
                        if config.credentials.contains(where: { $0.provider == credential.provider && $0.name == credential.name }) {
                            throw reader.fail(item, place, "credential \(credential.provider)/\(credential.name) appears twice")
                        }
                        config.credentials.append(credential)
                        credentialLines["\(credential.provider)/\(credential.name)"] = item.mark?.line ?? 0
                    } catch {
                        add(error)
                    }
                }
            } catch {
                add(error)
            }
        }
        if config.hasInlineSecrets, mode & 0o044 != 0 {
            warnings.append(
                "\(file) holds credential attributes and has mode \(PrivatePath.octal(mode)), so other users can read them; chmod 600 it, or move them to a credential file"
            )
        }
        self.config = config
    }

    /// The config's top level without the piece `error` is in, or nil when
    /// nothing can be left out to go on.
    mutating func leavingOut(_ error: YAMLFileError, from top: Node.Mapping, reader: YAMLReader) -> Node.Mapping? {
        let head = String(error.place.prefix { $0 != "." && $0 != "[" })
        if head.isEmpty {
            // A problem with a top-level key itself (unknown, twice): the key on that line.
            guard error.problem.hasPrefix("unknown key") || error.problem.hasSuffix("appears twice") else { return nil }
            guard let key = top.keys.first(where: { $0.mark?.line == error.line }), let name = key.string else { return nil }
            skipped.insert(name)
            return Node.Mapping(top.filter { $0.key != key }.map { ($0.key, $0.value) }, top.tag, top.style, top.mark)
        }
        if head == "providers" {
            let rest = error.place.dropFirst("providers.".count)
            guard error.place.hasPrefix("providers."), case .mapping(let providers)? = top["providers"] else { return nil }
            // The provider's name is what the place says up to its next part.
            let name = providers.keys.compactMap(\.string).filter { rest == $0 || rest.hasPrefix("\($0).") }.max { $0.count < $1.count }
            guard let name else { return nil }
            brokenProviders.insert(name)
            let remaining = providers.filter { $0.key.string != name }
            guard !remaining.isEmpty else { return nil }
            var smaller = top
            smaller["providers"] = .mapping(Node.Mapping(remaining.map { ($0.key, $0.value) }, providers.tag, providers.style, providers.mark))
            return smaller
        }
        if top[head] != nil {
            skipped.insert(head)
            return Self.removing([head], from: top)
        }
        // credential_key_file is missing for a postgres:// store: the
        // store's own problem; the rest can still be read without it.
        if head == "credential_key_file", top["store"] != nil {
            skipped.insert("store")
            return Self.removing(["store"], from: top)
        }
        return nil
    }

    static func removing(_ keys: Set<String>, from mapping: Node.Mapping) -> Node.Mapping {
        Node.Mapping(mapping.filter { !keys.contains($0.key.string ?? "") }.map { ($0.key, $0.value) }, mapping.tag, mapping.style, mapping.mark)
    }

    /// What start-up would meet, for the sections that were read.
    mutating func checkStartUp(_ config: ControllerConfig, environment: [String: String]) {
        let lines = KeyLines(file: file)
        for provider in config.providers {
            if let problem = Self.shimProblem(provider.shim.executable) {
                add(Problem(file: file, line: lines.line(of: ["providers", provider.name, "shim", "command"]), problem: "providers.\(provider.name).shim.command: \(problem)"))
            }
        }
        if !skipped.contains("store") {
            if let location = config.postgres {
                do {
                    _ = try location.password(passwordFile: config.storePasswordFile, environment: environment)
                } catch {
                    add(Problem(file: file, line: lines.line(of: [config.storePasswordFile == nil ? "store" : "store_password_file"]), problem: error.description))
                }
            } else if let problem = Self.storeProblem(config.storePath, createDirectory: config.storeDirectoryIsDefault) {
                add(Problem(file: file, line: lines.line(of: ["store"]), problem: "store: \(problem)"))
            }
        }
        if let keyFile = config.credentialKeyFile, !skipped.contains("credential_key_file") {
            do {
                _ = try CredentialSealer(keyFile: keyFile)
            } catch {
                add(Problem(file: file, line: lines.line(of: ["credential_key_file"]), problem: "credential_key_file: \(error)"))
            }
        }
        if !skipped.contains("runtime_directory") {
            let line = lines.line(of: ["runtime_directory"])
            for problem in runtimeDirectoryProblems(config.runtimeDirectory) {
                add(Problem(file: file, line: line, problem: "runtime_directory: \(problem)"))
            }
        }
    }

    /// What is wrong with a shim executable, as it would be started: it
    /// must be a regular file this user may execute.
    static func shimProblem(_ executable: String) -> String? {
        var info = stat()
        guard stat(executable, &info) == 0 else { return "cannot run \(executable): \(String(cString: strerror(errno)))" }
        guard info.st_mode & S_IFMT == S_IFREG else { return "\(executable) is not a regular file" }
        guard access(executable, X_OK) == 0 else { return "\(executable) is not executable by this user (mode \(PrivatePath.octal(info.st_mode & 0o7777)))" }
        return nil
    }

    /// What is wrong with a SQLite store path: an existing store must be a
    /// regular file this user can read and write, in a directory it can
    /// write (SQLite's journal); a missing one needs that directory, or
    /// (the default state directory) a place to create it.
    static func storeProblem(_ path: String, createDirectory: Bool) -> String? {
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFREG else { return "\(path) is not a regular file" }
            guard access(path, R_OK | W_OK) == 0 else { return "cannot read and write \(path): \(String(cString: strerror(errno)))" }
        }
        let directory = UnixSocket.parentDirectory(of: path)
        if stat(directory, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else { return "\(directory) is not a directory" }
            guard access(directory, W_OK | X_OK) == 0 else { return "cannot write in \(directory) (the store's directory): \(String(cString: strerror(errno)))" }
            return nil
        }
        guard createDirectory else { return "the store's directory \(directory) does not exist; create it, or name another store" }
        return creatableProblem(directory)
    }

    /// Why `path` (missing) could not be created, or nil: its nearest
    /// existing ancestor must be a directory this user can write.
    static func creatableProblem(_ path: String) -> String? {
        var ancestor = UnixSocket.parentDirectory(of: path)
        var info = stat()
        var depth = 0
        while stat(ancestor, &info) != 0, ancestor != "/", depth < 256 {
            ancestor = UnixSocket.parentDirectory(of: ancestor)
            depth += 1
        }
        guard info.st_mode & S_IFMT == S_IFDIR else { return "cannot create \(path): \(ancestor) is not a directory" }
        guard access(ancestor, W_OK | X_OK) == 0 else { return "cannot create \(path): cannot write in \(ancestor)" }
        return nil
    }

    /// The runtime directory as ``RuntimeDirectory`` would take it, without
    /// taking it: missing and creatable, or this user's, private (others at
    /// most pass through), its lock file sound and not held by a controller.
    mutating func runtimeDirectoryProblems(_ path: String) -> [String] {
        var problems: [String] = []
        do {
            try UnixSocket.checkPathLength("\(path)/\(ControlV1.socketName)")
        } catch {
            problems.append("\(error)")
        }
        var info = stat()
        guard lstat(path, &info) == 0 else {
            return problems + [Self.creatableProblem(path)].compactMap { $0 }
        }
        guard info.st_mode & S_IFMT != S_IFLNK else { return problems + ["\(path) is a symbolic link; the controller refuses to follow it"] }
        let directory = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard directory >= 0 else { return problems + ["cannot open \(path): \(String(cString: strerror(errno)))"] }
        defer { close(directory) }
        do {
            try PrivatePath.checkOwnDirectory(directory, path, justCreated: false, allowSearch: true)
        } catch {
            problems.append("\(error)")
        }
        let lock = openat(directory, RuntimeDirectory.lockFileName, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        if lock < 0 {
            if errno == ELOOP { problems.append("\(path)/\(RuntimeDirectory.lockFileName) is a symbolic link") }
            return problems
        }
        defer { close(lock) }
        guard fstat(lock, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_uid == getuid() else {
            return problems + ["\(path)/\(RuntimeDirectory.lockFileName) is not a regular file of this user's; remove it"]
        }
        // A shared lock, dropped at once: refused while a controller holds it.
        if flock(lock, LOCK_SH | LOCK_NB) == 0 {
            _ = flock(lock, LOCK_UN)
        } else {
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = buffer.withUnsafeMutableBytes { pread(lock, $0.baseAddress, $0.count, 0) }
            runtimeDirectoryInUse = true
            runtimeDirectoryHolder = count > 0 ? Int32(String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) : nil
            let who = runtimeDirectoryHolder.map { "pid \($0)" } ?? "another process"
            problems.append("\(path) is in use by a running controller (\(who)); a second controller with this config could not start")
        }
        return problems
    }
}

/// The lines of keys in a config, for problems found after reading it.
struct KeyLines {
    let root: Node?

    init(file: String) {
        root = (try? YAMLReader.readFile(path: file)).flatMap { try? Yams.compose(yaml: $0) }
    }

    /// The line of the key at `path` (mapping keys), else of the deepest
    /// key found on the way; 0 when none.
    func line(of path: [String]) -> Int {
        var node = root
        var line = 0
        for name in path {
            guard case .mapping(let mapping)? = node, let key = mapping.keys.first(where: { $0.string == name }) else { break }
            line = key.mark?.line ?? line
            node = mapping[key]
        }
        return line
    }
}
