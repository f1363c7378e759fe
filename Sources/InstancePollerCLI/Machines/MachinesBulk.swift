import ArgumentParser
import Controller
import Core
import Foundation
import SwiftProtobuf
import ControlAPI

/// `--input-format`: a ``MachineFileFormat`` as an option's value.
enum InputFormat: String, ExpressibleByArgument, CaseIterable {
    case csv, jsonl, yaml, ids

    var format: MachineFileFormat { MachineFileFormat(rawValue: rawValue)! }
}

/// `machines import`: a fleet from a file, checked whole before anything is
/// written, then added a chunk (one transaction) at a time.
struct MachinesImport: ControllerCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Add many machines from a file: CSV, JSON lines or YAML.",
        discussion: """
            Every row is checked first, by this command and then by the controller (unknown provider, an id in \
            use); each problem is reported as FILE:LINE: FIELD: PROBLEM and nothing is imported while any \
            remains. Then the machines are added in chunks, each chunk one transaction with its events. \
            Fields: id, provider, credential (required), instance_id, agent_status (default none), manual \
            (default false). CSV needs a header naming its columns, e.g.
              id,provider,credential,instance_id,agent_status,manual
              web-1,aws,prod,i-0abc,,false
            JSON lines: one object per line, e.g. {"id": "web-1", "provider": "aws", "credential": "prod"}. \
            YAML: a list of such mappings (or one under `machines:`).
            """
    )

    @Argument(help: ArgumentHelp("The file, or - for stdin.", valueName: "FILE")) var file: String
    @Option(help: "csv, jsonl or yaml (default: from the file's extension).") var inputFormat: InputFormat?
    @Flag(help: "Replace machines whose id exists (provider, credential, instance id, agent status, manual) instead of refusing them.")
    var update = false
    @Flag(help: "Check the file and the controller's answers; import nothing.") var dryRun = false
    @Option(help: "Machines per transaction (1 to 2000).") var chunkSize = 1000
    @OptionGroup var controller: ControllerOptions

    func validate() throws {
        guard (1...2000).contains(chunkSize) else { throw ValidationError("--chunk-size: expected 1 to 2000, not \(chunkSize)") }
        if inputFormat == .ids { throw ValidationError("--input-format: machines are imported from csv, jsonl or yaml") }
    }

    func execute() async throws {
        let input = try BulkInput.read(file)
        let format = try BulkInput.format(inputFormat, of: file, fallback: nil)
        let rows: [MachineRow]
        do {
            rows = try MachineFile.machines(input.data, format: format, file: input.name)
        } catch {
            throw BulkInput.refusal(error.problems.map(\.description), truncated: error.truncated, what: "nothing imported", in: input.name)
        }
        let client = try await controller.connect()
        defer { Task { await client.close() } }
        let chunks = stride(from: 0, to: rows.count, by: chunkSize).map { rows[$0..<min($0 + chunkSize, rows.count)] }

        // The controller checks every chunk first; nothing is written.
        var problems: [String] = []
        for chunk in chunks where problems.count < BulkInput.maxProblems {
            let answer = try await controller.call(ControlV1.addMachines, request(chunk, validateOnly: true), on: client)
            problems += BulkInput.describe(answer.problems, in: input.name) { chunk[chunk.startIndex + $0].line }
        }
        if !problems.isEmpty {
            throw BulkInput.refusal(problems, truncated: problems.count >= BulkInput.maxProblems, what: "nothing imported", in: input.name)
        }
        if dryRun {
            if controller.format.isStructured { return try Output.json(text: "{\"checked\":\(rows.count)}", controller.format) }
            return Output.line("checked \(rows.count) machines in \(input.name): all can be imported (nothing imported: --dry-run)")
        }

        var added = 0, updated = 0, unchanged = 0
        for chunk in chunks {
            do {
                let answer = try await controller.call(ControlV1.addMachines, request(chunk, validateOnly: false), on: client)
                added += Int(answer.added)
                updated += Int(answer.updated)
                unchanged += Int(answer.unchanged)
            } catch let error as CLIError {
                let done = added + updated + unchanged
                throw CLIError(.failure, "\(done) of \(rows.count) machines imported (in whole chunks), then chunk from line \(chunk.first!.line) failed: \(error.message)")
            }
        }
        if controller.format.isStructured { return try Output.json(text: "{\"added\":\(added),\"updated\":\(updated),\"unchanged\":\(unchanged)}", controller.format) }
        var summary = "imported \(rows.count) machines from \(input.name): \(added) added"
        if update { summary += ", \(updated) updated, \(unchanged) unchanged" }
        Output.line(summary + " (\(chunks.count) transaction\(chunks.count == 1 ? "" : "s"))")
    }

    private func request(_ rows: ArraySlice<MachineRow>, validateOnly: Bool) -> Instancepoller_Control_V1_AddMachinesRequest {
        .with {
            $0.update = update
            $0.validateOnly = validateOnly
            $0.machines = rows.map { row in
                .with {
                    $0.id = row.id
                    $0.provider = row.provider
                    $0.credential = row.credential
                    $0.instanceID = row.instanceID
                    $0.agentStatus = row.agentStatus.rawValue
                    $0.manual = row.manual
                }
            }
        }
    }
}

struct MachinesRemove: ControllerCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Remove a machine, or every machine listed in a file; they are no longer polled.",
        discussion: """
            With --file, the ids are read from FILE (- for stdin): one per line by default (as \
            `machines list --ids-only` prints them), or CSV, JSON lines or YAML with an id each. All must be \
            known machines, or nothing is removed; then they are removed in chunks, each one transaction. E.g.
              instancepoller machines list --provider old --ids-only | instancepoller machines remove --file -
            """
    )

    @Argument(help: "The machine's id.") var id: String?
    @Option(help: ArgumentHelp("Remove the machines listed in this file (- for stdin).", valueName: "FILE")) var file: String?
    @Option(help: "ids (one per line), csv, jsonl or yaml (default: from the file's extension, else ids).") var inputFormat: InputFormat?
    @Option(help: "Machines per transaction (1 to 2000).") var chunkSize = 1000
    @OptionGroup var controller: ControllerOptions

    func validate() throws {
        switch (id, file) {
        case (nil, nil): throw ValidationError("give a machine id, or --file FILE")
        case (.some, .some): throw ValidationError("give a machine id or --file FILE, not both")
        default: break
        }
        guard (1...2000).contains(chunkSize) else { throw ValidationError("--chunk-size: expected 1 to 2000, not \(chunkSize)") }
    }

    func execute() async throws {
        if let id {
            _ = try await controller.call(ControlV1.removeMachine, .with { $0.id = id })
            if controller.format.isStructured { return try Output.json(text: "{\"removed\":\(Output.jsonString(id))}", controller.format) }
            return Output.line("removed machine \(id)")
        }
        let input = try BulkInput.read(file!)
        let format = try BulkInput.format(inputFormat, of: file!, fallback: .ids)
        let rows: [MachineIDRow]
        do {
            rows = try MachineFile.ids(input.data, format: format, file: input.name)
        } catch {
            throw BulkInput.refusal(error.problems.map(\.description), truncated: error.truncated, what: "nothing removed", in: input.name)
        }
        let client = try await controller.connect()
        defer { Task { await client.close() } }
        let chunks = stride(from: 0, to: rows.count, by: chunkSize).map { rows[$0..<min($0 + chunkSize, rows.count)] }
        var problems: [String] = []
        for chunk in chunks where problems.count < BulkInput.maxProblems {
            let answer = try await controller.call(ControlV1.removeMachines, .with {
                $0.ids = chunk.map(\.id)
                $0.validateOnly = true
            }, on: client)
            problems += BulkInput.describe(answer.problems, in: input.name) { chunk[chunk.startIndex + $0].line }
        }
        if !problems.isEmpty {
            throw BulkInput.refusal(problems, truncated: problems.count >= BulkInput.maxProblems, what: "nothing removed", in: input.name)
        }
        var removed = 0
        for chunk in chunks {
            do {
                removed += Int(try await controller.call(ControlV1.removeMachines, .with { $0.ids = chunk.map(\.id) }, on: client).removed)
            } catch let error as CLIError {
                throw CLIError(.failure, "\(removed) of \(rows.count) machines removed (in whole chunks), then chunk from line \(chunk.first!.line) failed: \(error.message)")
            }
        }
        if controller.format.isStructured { return try Output.json(text: "{\"removed\":\(removed)}", controller.format) }
        Output.line("removed \(removed) machines listed in \(input.name)")
    }
}

/// A bulk command's input file and its problems.
enum BulkInput {
    /// Problems printed before the rest are only counted.
    static let maxProblems = 100
    /// The largest input read.
    static let maxBytes = 1 << 30

    /// The bytes of `path` (- for stdin) and the name problems give it.
    static func read(_ path: String) throws -> (data: Data, name: String) {
        if path == "-" {
            return (FileHandle.standardInput.readDataToEndOfFile(), "stdin")
        }
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw CLIError(.usage, "\(path): cannot read the file: \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else { throw CLIError(.usage, "\(path): not a regular file (give - to read stdin)") }
        guard Int(info.st_size) <= maxBytes else { throw CLIError(.usage, "\(path): larger than \(maxBytes >> 20) MiB; split it") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CLIError(.usage, "\(path): cannot read the file: \(String(cString: strerror(errno)))")
        }
        return (data, path)
    }

    static func format(_ given: InputFormat?, of path: String, fallback: MachineFileFormat?) throws -> MachineFileFormat {
        if let given { return given.format }
        if let known = MachineFile.format(forPath: path) { return known }
        if let fallback { return fallback }
        let what = path == "-" ? "stdin" : path
        throw CLIError(.usage, "\(what): cannot tell its format; name the file .csv, .jsonl or .yaml, or pass --input-format csv|jsonl|yaml")
    }

    /// "file:line: field: problem" for each problem the controller found
    /// in a chunk, in the file's order; `line` gives an item's line.
    static func describe(_ problems: [ControlV1.MachineProblem], in file: String, line: (Int) -> Int) -> [String] {
        problems.map { MachineFileProblem(file: file, line: line(Int($0.index)), field: $0.field, problem: $0.problem) }
            .enumerated().sorted { ($0.element.line, $0.offset) < ($1.element.line, $1.offset) }
            .map(\.element.description)
    }

    /// Prints every problem (the first ``maxProblems``) on stderr and makes
    /// the command's failure: "nothing imported: 3 problems in fleet.csv".
    static func refusal(_ problems: [String], truncated: Bool, what: String, in file: String) -> CLIError {
        for problem in problems.prefix(maxProblems) {
            Output.errorLine("instancepoller: \(problem)")
        }
        let count = truncated || problems.count > maxProblems ? "more than \(min(problems.count, maxProblems)) problems" : "\(problems.count) problem\(problems.count == 1 ? "" : "s")"
        return CLIError(.usage, "\(what): \(count) in \(file)")
    }
}
