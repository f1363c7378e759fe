internal import Core
public import Foundation
internal import Yams
internal import Support

/// The shapes of the file that `instancepoller machines import FILE|-`
/// and `machines remove --file FILE|-` read.
public enum MachineFileFormat: String, CaseIterable, Sendable {
    /// RFC 4180: a header line naming the columns, then one machine a row.
    case csv
    /// One JSON object a line.
    case jsonl
    /// A list of mappings, bare or under the key `machines`.
    case yaml
    /// One machine id a line; for removal only.
    case ids
}

/// One machine of an import file, its fields checked by ``MachineFields``.
public struct MachineRow: Hashable, Sendable {
    /// 1-based line where the row (CSV, JSONL) or item (YAML) starts.
    public var line: Int
    public var id: String
    public var provider: String
    public var credential: String
    /// Empty: not provisioned yet.
    public var instanceID: String
    public var agentStatus: Machine.AgentStatus
    /// Manually provisioned: never polled.
    public var manual: Bool

    public init(
        line: Int, id: String, provider: String, credential: String,
        instanceID: String = "", agentStatus: Machine.AgentStatus = .none, manual: Bool = false
    ) {
        self.line = line
        self.id = id
        self.provider = provider
        self.credential = credential
        self.instanceID = instanceID
        self.agentStatus = agentStatus
        self.manual = manual
    }
}

/// One machine id of a removal file and the line it is on.
public struct MachineIDRow: Hashable, Sendable {
    public var line: Int
    public var id: String

    public init(line: Int, id: String) {
        self.line = line
        self.id = id
    }
}

/// One thing wrong in a machines file, on one line:
/// `fleet.csv:7: agent_status: unknown agent status "runing" (…)`.
public struct MachineFileProblem: Error, Hashable, Sendable, CustomStringConvertible {
    /// The name the caller gave the file, e.g. its path or "stdin".
    public var file: String
    /// 1-based; 0 when the problem is the whole file.
    public var line: Int
    /// The field (`id`, `manual`, …); empty when the problem is the line's
    /// or the file's.
    public var field: String
    public var problem: String

    public init(file: String, line: Int = 0, field: String = "", problem: String) {
        self.file = file
        self.line = line
        self.field = field
        self.problem = problem
    }

    /// `file:line: field: problem`, without the parts that are empty or 0;
    /// one line whatever the parts hold (control characters are escaped).
    public var description: String {
        var text = line > 0 ? "\(file):\(line): " : "\(file): "
        if !field.isEmpty { text += "\(field): " }
        text += problem
        return TextEscaping.oneLine(text)
    }
}

/// Every problem of a machines file, in the order of the file (at most
/// ``MachineFile/maxProblems``; `truncated` says there were more).
public struct MachineFileProblems: Error, Sendable, CustomStringConvertible {
    public var problems: [MachineFileProblem]
    /// More problems were found than `problems` lists.
    public var truncated: Bool

    public init(problems: [MachineFileProblem], truncated: Bool = false) {
        self.problems = problems
        self.truncated = truncated
    }

    /// One problem a line; a last line says when more were left out.
    public var description: String {
        var lines = problems.map(\.description)
        if truncated {
            let file = problems.first?.file ?? "-"
            lines.append("\(file): more problems; the first \(problems.count) are listed")
        }
        return lines.joined(separator: "\n")
    }
}

/// Reads the machines file of `instancepoller machines import` and
/// `machines remove --file`: all or nothing, every row checked with the
/// rules of ``MachineFields``, every problem reported with its line.
public enum MachineFile {
    /// The fields of a machine, as CSV columns, JSON keys and YAML keys.
    public static let fieldNames = Field.allCases.map(\.name)
    /// The most problems one read reports.
    public static let maxProblems = 1000

    /// By extension: `.csv` → csv; `.jsonl`/`.ndjson` → jsonl;
    /// `.yaml`/`.yml` → yaml; `.txt` → ids; else (and for "-") nil.
    public static func format(forPath path: String) -> MachineFileFormat? {
        let name = path.split(separator: "/", omittingEmptySubsequences: false).last ?? ""
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return nil }
        switch name[name.index(after: dot)...].lowercased() {
        case "csv": return .csv
        case "jsonl", "ndjson": return .jsonl
        case "yaml", "yml": return .yaml
        case "txt": return .ids
        default: return nil
        }
    }

    /// Reads machines for import from csv, jsonl or yaml (an ids file is
    /// a problem). Checks every row: returns them all, or throws every
    /// problem found; nothing is returned in part. `file` names the input
    /// in problems.
    public static func machines(_ data: Data, format: MachineFileFormat, file: String) throws(MachineFileProblems) -> [MachineRow] {
        var checker = Checker(file: file)
        switch format {
        case .csv: readCSV(data, required: [.id, .provider, .credential], &checker, row: { line, fields, columns, checker in
            func value(_ field: Field) -> String? { columns[field.rawValue].map { fields[$0] } }
            var manual = false
            var manualProblem: String?
            if let text = value(.manual) {
                if let bool = csvBool(text) {
                    manual = bool
                } else {
                    manualProblem = "expected true, false, yes, no, 1, 0 or nothing (got \(MachineFields.quoted(text)))"
                }
            }
            checker.machine(
                line: line, id: value(.id), provider: value(.provider), credential: value(.credential),
                instanceID: value(.instanceID) ?? "", agentStatus: value(.agentStatus) ?? "",
                manual: manual, manualProblem: manualProblem
            )
        })
        case .jsonl: readJSONL(data, &checker) { line, object, checker in
            let id = checker.jsonString(object, .id, line)
            let provider = checker.jsonString(object, .provider, line)
            let credential = checker.jsonString(object, .credential, line)
            let instanceID = checker.jsonString(object, .instanceID, line)
            let agentStatus = checker.jsonString(object, .agentStatus, line)
            let manual = jsonBool(object[Field.manual.name])
            checker.machine(
                line: line, id: id, provider: provider, credential: credential,
                instanceID: instanceID, agentStatus: agentStatus, manual: manual.value, manualProblem: manual.problem
            )
        }
        case .yaml: readYAML(data, &checker, ids: false)
        case .ids:
            checker.add(0, "", "an ids file lists machine ids, for removal; import reads csv, jsonl or yaml")
        }
        if checker.items == 0, checker.total == 0 { checker.add(0, "", "no machines in the file") }
        if checker.total > 0 { throw checker.problems }
        return checker.rows
    }

    /// Reads machine ids for removal: `ids` is one id a line (blank lines
    /// and lines starting with # skipped, spaces around trimmed); csv
    /// with an `id` column; jsonl objects with an "id"; yaml a list of ids
    /// or of mappings with an id (bare or under `machines`). Other fields
    /// of a machine are ignored, unknown ones are problems. Each id is
    /// checked with ``MachineFields/idProblem(_:)``; an id twice is a
    /// problem. Returns them all in file order, or throws every problem.
    public static func ids(_ data: Data, format: MachineFileFormat, file: String) throws(MachineFileProblems) -> [MachineIDRow] {
        var checker = Checker(file: file)
        switch format {
        case .csv: readCSV(data, required: [.id], &checker) { line, fields, columns, checker in
            checker.id(line: line, columns[Field.id.rawValue].map { fields[$0] })
        }
        case .jsonl: readJSONL(data, &checker) { line, object, checker in
            let id = checker.jsonString(object, .id, line)
            checker.id(line: line, id)
        }
        case .yaml: readYAML(data, &checker, ids: true)
        case .ids: readIDLines(data, &checker)
        }
        if checker.items == 0, checker.total == 0 { checker.add(0, "", "no machine ids in the file") }
        if checker.total > 0 { throw checker.problems }
        return checker.ids
    }

    // MARK: - Checking rows

    enum Field: Int, CaseIterable {
        case id, provider, credential, instanceID, agentStatus, manual

        var name: String {
            switch self {
            case .id: "id"
            case .provider: "provider"
            case .credential: "credential"
            case .instanceID: "instance_id"
            case .agentStatus: "agent_status"
            case .manual: "manual"
            }
        }

        init?(name: String) {
            guard let field = Field.allCases.first(where: { $0.name == name }) else { return nil }
            self = field
        }
    }

    /// Collects the problems and the good rows of one read. A field given
    /// as nil was already reported (a wrong type, a missing column) and is
    /// not checked again.
    struct Checker {
        var problems: MachineFileProblems
        let file: String
        /// Every problem found, listed or not.
        var total = 0
        /// Rows or items seen, good or bad.
        var items = 0
        var rows: [MachineRow] = []
        var ids: [MachineIDRow] = []
        /// The line of each good id's first appearance.
        var firstLine: [String: Int] = [:]

        init(file: String) {
            self.file = file
            problems = MachineFileProblems(problems: [])
        }

        mutating func add(_ line: Int, _ field: String, _ problem: String) {
            total += 1
            guard problems.problems.count < MachineFile.maxProblems else {
                problems.truncated = true
                return
            }
            problems.problems.append(MachineFileProblem(file: file, line: line, field: field, problem: problem))
        }

        /// Checks one machine; `manualProblem` says why `manual` could not
        /// be read. `lines` gives a field's own line (YAML), else every
        /// field is on `line`.
        mutating func machine(
            line: Int, id: String?, provider: String?, credential: String?,
            instanceID: String?, agentStatus: String?, manual: Bool, manualProblem: String? = nil,
            lines: [Int]? = nil
        ) {
            items += 1
            func at(_ field: Field) -> Int { lines?[field.rawValue] ?? line }
            checkID(id, at(.id))
            if let provider, let problem = MachineFields.nameProblem(provider, what: "provider") {
                add(at(.provider), Field.provider.name, problem)
            }
            if let credential, let problem = MachineFields.nameProblem(credential, what: "credential") {
                add(at(.credential), Field.credential.name, problem)
            }
            if let instanceID, let problem = MachineFields.instanceIDProblem(instanceID) {
                add(at(.instanceID), Field.instanceID.name, problem)
            }
            var status = Machine.AgentStatus.none
            if let agentStatus {
                switch MachineFields.agentStatus(agentStatus) {
                case .success(let value): status = value
                case .failure(let problem): add(at(.agentStatus), Field.agentStatus.name, problem.description)
                }
            }
            if let manualProblem { add(at(.manual), Field.manual.name, manualProblem) }
            // Once the file has a problem, nothing is returned: keep no rows.
            guard total == 0, let id, let provider, let credential, let instanceID else { return }
            rows.append(MachineRow(
                line: line, id: id, provider: provider, credential: credential,
                instanceID: instanceID, agentStatus: status, manual: manual
            ))
        }

        /// Checks one id for removal.
        mutating func id(line: Int, _ id: String?) {
            items += 1
            checkID(id, line)
            guard total == 0, let id else { return }
            ids.append(MachineIDRow(line: line, id: id))
        }

        private mutating func checkID(_ id: String?, _ line: Int) {
            guard let id else { return }
            if let problem = MachineFields.idProblem(id) {
                add(line, Field.id.name, problem)
            } else if let first = firstLine[id] {
                add(line, Field.id.name, "\(MachineFields.quoted(id)) already appears on line \(first)")
            } else {
                firstLine[id] = line
            }
        }
    }

    /// "id, provider, credential, instance_id, agent_status, manual"
    static let fieldList = Field.allCases.map(\.name).joined(separator: ", ")

    /// The bytes of `data` without a UTF-8 byte order mark.
    static func withBytes<T>(_ data: Data, _ body: (UnsafeBufferPointer<UInt8>) -> T) -> T {
        data.withUnsafeBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            let start = bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0
            return body(UnsafeBufferPointer(rebasing: bytes[start...]))
        }
    }

    /// Calls `body` with each line's number and bytes (without "\n" or "\r\n").
    static func forEachLine(_ bytes: UnsafeBufferPointer<UInt8>, _ body: (Int, UnsafeBufferPointer<UInt8>) -> Void) {
        var number = 1
        var start = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count, bytes[end] != UInt8(ascii: "\n") { end += 1 }
            var stop = end
            if stop > start, bytes[stop - 1] == UInt8(ascii: "\r") { stop -= 1 }
            body(number, UnsafeBufferPointer(rebasing: bytes[start..<stop]))
            number += 1
            start = end + 1
        }
    }

    static func isBlank(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        bytes.allSatisfy { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r") }
    }

    static let notUTF8 = "not UTF-8 text"

    // MARK: - ids

    static func readIDLines(_ data: Data, _ checker: inout Checker) {
        withBytes(data) { bytes in
            forEachLine(bytes) { line, bytes in
                guard let text = String(validating: bytes, as: UTF8.self) else {
                    checker.items += 1
                    checker.add(line, "", notUTF8)
                    return
                }
                let id = text.trimmingCharacters(in: CharacterSet(charactersIn: " \t\r"))
                if id.isEmpty || id.hasPrefix("#") { return }
                checker.id(line: line, id)
            }
        }
    }

    // MARK: - CSV

    /// `manual` in CSV: true/false/yes/no/1/0, any case, or empty (false).
    static func csvBool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "yes", "1": true
        case "false", "no", "0", "": false
        default: nil
        }
    }

    /// Reads the header, then hands `row` each row whose fields match the
    /// header, with the column of each field (nil when the header has no
    /// such column; a missing required column is reported once).
    static func readCSV(
        _ data: Data, required: [Field], _ checker: inout Checker,
        row: (Int, [String], [Int?], inout Checker) -> Void
    ) {
        var columns: [Int?]?
        var columnCount = 0
        var headerBroken = false
        withBytes(data) { bytes in
            csvRecords(bytes) { line, fields in
                guard !headerBroken else { return }
                guard let known = columns else {
                    columns = header(fields, line: line, required: required, &checker)
                    columnCount = fields.count
                    return
                }
                checker.items += 1
                guard fields.count == columnCount else {
                    checker.add(line, "", "row has \(fields.count) field\(fields.count == 1 ? "" : "s"), the header \(columnCount)")
                    return
                }
                row(line, fields, known, &checker)
            } problem: { line, problem in
                guard !headerBroken else { return }
                if columns == nil {
                    headerBroken = true
                } else {
                    checker.items += 1
                }
                checker.add(line, "", problem)
            }
        }
    }

    /// The column of each field, reporting unknown, repeated and missing
    /// columns. Names are trimmed of spaces.
    static func header(_ names: [String], line: Int, required: [Field], _ checker: inout Checker) -> [Int?] {
        var columns = [Int?](repeating: nil, count: Field.allCases.count)
        for (index, raw) in names.enumerated() {
            let name = raw.trimmingCharacters(in: .whitespaces)
            guard let field = Field(name: name) else {
                checker.add(line, "", "unknown column \(MachineFields.quoted(name)) (known columns: \(fieldList))")
                continue
            }
            guard columns[field.rawValue] == nil else {
                checker.add(line, "", "column \(MachineFields.quoted(name)) appears twice")
                continue
            }
            columns[field.rawValue] = index
        }
        for field in required where columns[field.rawValue] == nil {
            checker.add(line, "", "the header has no column \"\(field.name)\" (needed: \(required.map(\.name).joined(separator: ", ")))")
        }
        return columns
    }

    /// Splits RFC 4180 text into records: `record` gets each record's first
    /// line and its fields; `problem` gets text that is not CSV (that
    /// record is skipped). Empty lines are skipped; lines end in "\n" or
    /// "\r\n"; quoted fields hold commas, "" for a quote, and line ends.
    static func csvRecords(
        _ bytes: UnsafeBufferPointer<UInt8>,
        record: (Int, [String]) -> Void,
        problem: (Int, String) -> Void
    ) {
        let quote = UInt8(ascii: "\""), comma = UInt8(ascii: ","), newline = UInt8(ascii: "\n"), cr = UInt8(ascii: "\r")
        let count = bytes.count
        var index = 0
        var line = 1
        var fields: [String] = []
        var scratch: [UInt8] = []
        while index < count {
            let recordLine = line
            // An empty line holds no record.
            if bytes[index] == newline {
                line += 1
                index += 1
                continue
            }
            if bytes[index] == cr, index + 1 == count || bytes[index + 1] == newline {
                line += 1
                index += 2
                continue
            }
            fields.removeAll(keepingCapacity: true)
            var bad: (line: Int, problem: String)?
            var undecodable = false
            fieldLoop: while true {
                if index < count, bytes[index] == quote {
                    let openLine = line
                    index += 1
                    scratch.removeAll(keepingCapacity: true)
                    var segment = index
                    var closed = false
                    while index < count {
                        let byte = bytes[index]
                        if byte == quote {
                            scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[segment..<index]))
                            if index + 1 < count, bytes[index + 1] == quote {
                                scratch.append(quote)
                                index += 2
                                segment = index
                                continue
                            }
                            index += 1
                            closed = true
                            break
                        }
                        if byte == newline { line += 1 }
                        index += 1
                    }
                    guard closed else {
                        problem(openLine, "the quoted field that starts on this line has no closing quote")
                        return
                    }
                    if let text = String(validating: scratch, as: UTF8.self) {
                        fields.append(text)
                    } else {
                        undecodable = true
                        fields.append("")
                    }
                } else {
                    let start = index
                    while index < count {
                        let byte = bytes[index]
                        if byte == comma || byte == newline { break }
                        if byte == quote, bad == nil {
                            bad = (line, "a quote inside unquoted field \(fields.count + 1) (quote the whole field and double the quotes in it)")
                        }
                        index += 1
                    }
                    var end = index
                    if end > start, bytes[end - 1] == cr, index == count || bytes[index] == newline { end -= 1 }
                    if let text = String(validating: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self) {
                        fields.append(text)
                    } else {
                        undecodable = true
                        fields.append("")
                    }
                }
                // After a field: a comma, the end of the line or of the file.
                guard index < count else { break }
                let byte = bytes[index]
                if byte == comma {
                    index += 1
                    continue
                }
                if byte == newline || (byte == cr && (index + 1 == count || bytes[index + 1] == newline)) {
                    index += byte == cr ? 2 : 1
                    line += 1
                    break
                }
                // Only after a closing quote: skip the rest of the line.
                if bad == nil { bad = (line, "text after the closing quote of field \(fields.count)") }
                while index < count, bytes[index] != newline { index += 1 }
                index += 1
                line += 1
                break fieldLoop
            }
            if let bad {
                problem(bad.line, bad.problem)
            } else if undecodable {
                problem(recordLine, notUTF8)
            } else {
                record(recordLine, fields)
            }
        }
    }

    // MARK: - JSONL

    /// Hands `object` each line's JSON object; blank lines are skipped.
    static func readJSONL(_ data: Data, _ checker: inout Checker, object: (Int, [String: Any], inout Checker) -> Void) {
        withBytes(data) { bytes in
            forEachLine(bytes) { line, bytes in
                guard !isBlank(bytes) else { return }
                checker.items += 1
                let value: Any
                do {
                    value = try JSONSerialization.jsonObject(with: Data(buffer: bytes), options: [.fragmentsAllowed])
                } catch {
                    let reason = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? error.localizedDescription
                    checker.add(line, "", "invalid JSON: \(reason)")
                    return
                }
                guard let fields = value as? [String: Any] else {
                    checker.add(line, "", "not a JSON object")
                    return
                }
                if let twice = repeatedKey(bytes, keys: fields.count) {
                    checker.add(line, "", twice.map { "key \(MachineFields.quoted($0)) appears twice" } ?? "a key appears twice")
                }
                for key in fields.keys.sorted() where Field(name: key) == nil {
                    checker.add(line, "", "unknown key \(MachineFields.quoted(key)) (known keys: \(fieldList))")
                }
                object(line, fields, &checker)
            }
        }
    }

    /// JSONSerialization keeps the last of a repeated key: counts the keys
    /// of the object that `bytes` (valid JSON) holds. nil when there are
    /// `keys`; else the repeated key as written (nil inside when only the
    /// escapes differ).
    static func repeatedKey(_ bytes: UnsafeBufferPointer<UInt8>, keys: Int) -> String?? {
        let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
        var depth = 0
        var inString = false
        var escaped = false
        var expectKey = false
        var keyStart: Int?
        var written: [String] = []
        for (index, byte) in bytes.enumerated() {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == backslash {
                    escaped = true
                } else if byte == quote {
                    inString = false
                    if let start = keyStart {
                        written.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
                        keyStart = nil
                    }
                }
                continue
            }
            switch byte {
            case quote:
                inString = true
                if depth == 1, expectKey {
                    keyStart = index + 1
                    expectKey = false
                }
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                if depth == 1 { expectKey = true }
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
            case UInt8(ascii: ","):
                if depth == 1 { expectKey = true }
            default:
                break
            }
        }
        guard written.count != keys else { return nil }
        var seen: Set<String> = []
        return .some(written.first { !seen.insert($0).inserted })
    }

    /// A JSON bool, not a number (JSONSerialization makes both NSNumbers).
    static func isJSONBool(_ value: Any) -> Bool {
        guard let number = value as? NSNumber else { return false }
        return type(of: number) == type(of: NSNumber(value: true))
    }

    /// A JSON bool field: absent is false; anything but true or false is a problem.
    static func jsonBool(_ value: Any?) -> (value: Bool, problem: String?) {
        guard let value else { return (false, nil) }
        guard isJSONBool(value), let bool = value as? Bool else {
            let shown = (value as? String).map { MachineFields.quoted($0) } ?? jsonKind(value)
            return (false, "expected true or false, not \(shown)")
        }
        return (bool, nil)
    }

    static func jsonKind(_ value: Any) -> String {
        if isJSONBool(value) { return "true or false" }
        if value is NSNumber { return "a number" }
        if value is NSNull { return "null" }
        if value is String { return "a string" }
        if value is [Any] { return "a list" }
        return "an object"
    }

    // MARK: - YAML

    /// Reads the list of machines (or, for `ids`, of ids or machines).
    static func readYAML(_ data: Data, _ checker: inout Checker, ids: Bool) {
        let decoded = withBytes(data) { bytes -> String? in
            if let text = String(validating: bytes, as: UTF8.self) { return text }
            var first = 0
            forEachLine(bytes) { line, bytes in
                if first == 0, String(validating: bytes, as: UTF8.self) == nil { first = line }
            }
            checker.add(first, "", notUTF8)
            return nil
        }
        guard let text = decoded else {
            checker.items += 1
            return
        }
        let root: Node
        do {
            root = try YAMLReader.parse(text, file: checker.file) { _, node in node }
        } catch {
            // A document of nothing (or only comments) lists no machines.
            if !(error.line == 0 && error.problem == "the file is empty") {
                checker.items += 1
                checker.add(error.line, "", error.problem)
            }
            return
        }
        let list = ids ? "a list of machine ids" : "a list of machines"
        var items: [Node] = []
        switch root {
        case .sequence(let sequence):
            items = Array(sequence)
        case .mapping(let mapping):
            var found = false
            for (key, value) in mapping {
                guard key.string == "machines" else {
                    checker.items += 1
                    checker.add(line(key), "", "unknown key \(MachineFields.quoted(key.string ?? "")) (the file is \(list), bare or under the key machines)")
                    continue
                }
                found = true
                switch value {
                case .sequence(let sequence): items = Array(sequence)
                case _ where isNull(value): break
                default:
                    checker.items += 1
                    checker.add(line(value), "machines", "expected \(list)")
                }
            }
            if !found, mapping.count == 0 {
                checker.items += 1
                checker.add(line(root), "", "expected \(list), bare or under the key machines")
            }
        default:
            checker.items += 1
            checker.add(line(root), "", "expected \(list), bare or under the key machines")
        }
        for item in items {
            if ids, case .scalar(let scalar) = item {
                checker.id(line: line(item), isNull(item) ? "" : scalar.string)
            } else if ids {
                guard let fields = yamlFields(item, &checker, what: "an id or a mapping with the key id") else {
                    checker.items += 1
                    continue
                }
                let id = yamlString(fields[Field.id.rawValue], .id, &checker)
                checker.id(line: fields[Field.id.rawValue].map(line) ?? line(item), id)
            } else {
                guard let fields = yamlFields(item, &checker, what: "a mapping with the keys \(fieldList)") else {
                    checker.items += 1
                    continue
                }
                let itemLine = line(item)
                var manual = false
                var manualProblem: String?
                if let value = fields[Field.manual.rawValue], !isNull(value) {
                    if value.tag.rawValue == Tag.Name.bool.rawValue, let bool = value.bool {
                        manual = bool
                    } else {
                        let shown = value.scalar.map { MachineFields.quoted($0.string) } ?? kind(value)
                        manualProblem = "expected true or false, not \(shown)"
                    }
                }
                let id = yamlString(fields[Field.id.rawValue], .id, &checker)
                let provider = yamlString(fields[Field.provider.rawValue], .provider, &checker)
                let credential = yamlString(fields[Field.credential.rawValue], .credential, &checker)
                let instanceID = yamlString(fields[Field.instanceID.rawValue], .instanceID, &checker)
                let agentStatus = yamlString(fields[Field.agentStatus.rawValue], .agentStatus, &checker)
                checker.machine(
                    line: itemLine, id: id, provider: provider, credential: credential,
                    instanceID: instanceID, agentStatus: agentStatus, manual: manual, manualProblem: manualProblem,
                    lines: fields.map { $0.map(line) ?? itemLine }
                )
            }
        }
    }

    /// The item's value node of each field; unknown keys are reported.
    /// nil (reported) when the item is not a mapping.
    static func yamlFields(_ item: Node, _ checker: inout Checker, what: String) -> [Node?]? {
        guard case .mapping(let mapping) = item else {
            checker.add(line(item), "", "expected \(what), not \(kind(item))")
            return nil
        }
        var fields = [Node?](repeating: nil, count: Field.allCases.count)
        for (key, value) in mapping {
            guard case .scalar(let name) = key, let field = Field(name: name.string) else {
                let shown = key.scalar.map { MachineFields.quoted($0.string) } ?? kind(key)
                checker.add(line(key), "", "unknown key \(shown) (known keys: \(fieldList))")
                continue
            }
            fields[field.rawValue] = value
        }
        return fields
    }

    /// A field's text: absent or null is empty; nil (reported) when not a scalar.
    static func yamlString(_ node: Node?, _ field: Field, _ checker: inout Checker) -> String? {
        guard let node, !isNull(node) else { return "" }
        guard case .scalar(let scalar) = node else {
            checker.add(line(node), field.name, "expected a string, not \(kind(node))")
            return nil
        }
        return scalar.string
    }

    static func isNull(_ node: Node) -> Bool {
        guard case .scalar(let scalar) = node else { return false }
        return scalar.style == .plain && node.tag.rawValue == Tag.Name.null.rawValue
    }

    static func kind(_ node: Node) -> String {
        switch node {
        case .scalar: "a string"
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .alias: "an alias"
        }
    }

    static func line(_ node: Node) -> Int { node.mark?.line ?? 0 }
}

extension MachineFile.Checker {
    /// A string field of a JSON object: absent is empty; nil (reported)
    /// when not a string.
    mutating func jsonString(_ object: [String: Any], _ field: MachineFile.Field, _ line: Int) -> String? {
        guard let value = object[field.name] else { return "" }
        guard let text = value as? String else {
            add(line, field.name, "expected a string, not \(MachineFile.jsonKind(value))")
            return nil
        }
        return text
    }
}
