import ArgumentParser
import Controller
import Core
import Foundation
import Logging
import SwiftProtobuf
import Support
import ControlAPI
#if canImport(Glibc)
import Glibc
#endif

/// Where the running controller is, and how to print answers: every command
/// that talks to the controller takes these.
struct ControllerOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "The controller's runtime directory (holds control.sock). Default: --config's runtime_directory, else "
            + "$INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd), else /run/instancepoller for root "
            + "and for the user that owns it (the systemd unit's), else $XDG_RUNTIME_DIR/instancepoller "
            + "or /tmp/instancepoller-UID.",
        valueName: "DIR"))
    var runtimeDir: String?

    @Option(help: ArgumentHelp(
        "Read the runtime directory from this config file (only runtime_directory is used: other errors in it are a warning).",
        valueName: "FILE"))
    var config: String?

    @Option(help: "Output: table (for people), json (for scripts), jsonl (one JSON object per line, for pipelines) or yaml (the JSON's fields as YAML).")
    var format: OutputFormat = .table

    /// `--runtime-dir`, else the config's, else $INSTANCEPOLLER_RUNTIME_DIR,
    /// else ``ControllerConfig/clientRuntimeDirectory(environment:uid:ownerOf:)``.
    func runtimeDirectory() throws -> String {
        if let runtimeDir { return runtimeDir }
        if let config {
            // Only runtime_directory matters here: the rest is checked (no
            // credential file is read) and its first error is a warning.
            let reading: ControllerConfig.RuntimeDirectoryReading
            do {
                reading = try ControllerConfig.runtimeDirectory(configPath: config)
            } catch {
                throw CLIError(.usage, "\(error)")
            }
            if let problem = reading.problem {
                let using = reading.named ? "using its runtime_directory" : "using the default runtime directory \(reading.path)"
                Output.errorLine("instancepoller: warning: \(problem); \(using)")
            }
            return reading.path
        }
        if let fromEnvironment = ProcessInfo.processInfo.environment["INSTANCEPOLLER_RUNTIME_DIR"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return ControllerConfig.clientRuntimeDirectory()
    }

    /// Connects to the controller's control socket.
    func connect() async throws -> RPCClient {
        let socket = "\(try runtimeDirectory())/\(ControlV1.socketName)"
        guard FileManager.default.fileExists(atPath: socket) else {
            throw CLIError(.failure, "no controller is running (no socket at \(socket)); start one with `instancepoller run --config FILE`, or pass --runtime-dir or --config")
        }
        do {
            return try await RPCClient.connect(unixSocketPath: socket, logger: Logger(label: "instancepoller-cli") { _ in SwiftLogNoOpLogHandler() })
        } catch {
            // "cannot connect to SOCKET: connection refused": the reason is enough here.
            var reason = RPCError(from: error).message
            if reason.hasPrefix("cannot connect to \(socket): ") { reason.removeFirst("cannot connect to \(socket): ".count) }
            throw CLIError(.failure, "no controller answers on \(socket) (\(reason)); start one with `instancepoller run --config FILE`")
        }
    }

    /// Calls `method` on the controller: one call, one connection.
    func call<Request, Response>(_ method: MethodDescriptor<Request, Response>, _ request: Request) async throws -> Response {
        let client = try await connect()
        defer { Task { await client.close() } }
        return try await call(method, request, on: client)
    }

    /// Calls `method` on a connection made by ``connect()``.
    func call<Request, Response>(_ method: MethodDescriptor<Request, Response>, _ request: Request, on client: RPCClient) async throws -> Response {
        do {
            return try await client.call(method, request, timeout: .seconds(60))
        } catch {
            throw CLIError(RPCError(from: error))
        }
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json, jsonl, yaml

    /// json, jsonl or yaml: the answer's fields for scripts. json and
    /// jsonl print one object on one line either way; only listings differ
    /// (an array, or a line each). yaml has the same fields as json (a
    /// listing is a sequence, a stream of events one document each).
    var isStructured: Bool { self != .table }
}

/// A command's failure: a one-line message and exit status 1 (failure) or 2
/// (usage: the request was wrong).
struct CLIError: Error, CustomStringConvertible {
    enum Kind { case failure, usage }
    var kind: Kind
    var message: String
    init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// A failed call: usage when the request was wrong (InvalidArgument),
    /// else failure. One that may pass if tried again (Unavailable,
    /// ResourceExhausted, …) says so after its message, with its code.
    init(_ rpc: RPCError) {
        let retry = rpc.code.isRetryable ? " (\(rpc.code): try again later)" : ""
        self.init(rpc.code == .invalidArgument ? .usage : .failure, rpc.message + retry)
    }
    var description: String { message }
}

/// Printing answers: aligned tables for people, JSON for scripts.
enum Output {
    static func line(_ text: String = "") {
        write(text + "\n")
    }

    /// Writes `text` to stdout as it is, in as few writes as it takes. When
    /// the reader has gone (`instancepoller machines list | head`), the
    /// process ends at once, quietly, with status 141 as a shell reports a
    /// command ended by SIGPIPE.
    static func write(_ text: String) {
        switch writeAll(STDOUT_FILENO, text) {
        case nil: return
        case EPIPE: exit(141)
        case let code?:
            errorLine("instancepoller: cannot write the output: \(String(cString: strerror(code)))")
            exit(1)
        }
    }

    /// Writes all of `text` to `fd` with write(2); nil, or the errno of the
    /// write that failed.
    private static func writeAll(_ fd: Int32, _ text: String) -> Int32? {
        var text = text
        return text.withUTF8 { bytes -> Int32? in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0, errno == EINTR {
                    continue
                } else {
                    return written < 0 ? errno : EIO
                }
            }
            return nil
        }
    }

    /// Writes one line to stderr with write(2). A stderr that is gone is
    /// ignored: FileHandle's write would trap on EPIPE when SIGPIPE is
    /// ignored (`instancepoller watch 2>&1 | head -1`).
    static func errorLine(_ text: String) {
        _ = writeAll(STDERR_FILENO, text + "\n")
    }

    /// Prints a table: columns padded to their widest cell.
    static func table(_ header: [String], _ rows: [[String]]) {
        write(tableLines(header, rows).map { $0 + "\n" }.joined())
    }

    /// A table's lines; the last column is not padded.
    static func tableLines(_ header: [String], _ rows: [[String]]) -> [String] {
        let widths = columnWidths(header, rows)
        return ([header] + rows).map { tableLine($0, widths: widths) }
    }

    /// Each column's widest cell.
    static func columnWidths(_ header: [String], _ rows: [[String]]) -> [Int] {
        var widths = header.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
        }
        return widths
    }

    /// One row padded to `widths` (a longer cell pushes the rest right);
    /// the last column is not padded.
    static func tableLine(_ cells: [String], widths: [Int]) -> String {
        cells.enumerated().map { index, cell in
            index == cells.count - 1 || index >= widths.count ? cell : cell.padding(toLength: max(widths[index], cell.count), withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }

    /// `value` as a JSON string, quotes, backslashes and control characters
    /// escaped.
    static func jsonString(_ value: String) -> String {
        TextEscaping.json(value)
    }

    static let jsonOptions: JSONEncodingOptions = {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        options.alwaysPrintEnumsAsInts = false
        return options
    }()

    /// A message as one line of JSON (proto field names), or as YAML with
    /// the same fields when `format` is yaml.
    static func json(_ message: some SwiftProtobuf.Message, _ format: OutputFormat) throws {
        try json(text: try message.jsonString(options: jsonOptions), format)
    }

    /// A JSON object as it is, or as YAML when `format` is yaml.
    static func json(text: String, _ format: OutputFormat) throws {
        guard format == .yaml else { return line(text) }
        do {
            write(try JSONToYAML.document(text))
        } catch {
            throw CLIError(.failure, error.description)
        }
    }

    static func time(_ unixNano: Int64) -> String {
        guard unixNano != 0 else { return "-" }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: Date(timeIntervalSince1970: Double(unixNano) / 1e9))
    }

    static func duration(nanoseconds: Int64) -> String {
        let seconds = Double(nanoseconds) / 1e9
        if seconds >= 60, seconds.truncatingRemainder(dividingBy: 60) == 0 { return "\(Int(seconds / 60))m" }
        if seconds == seconds.rounded() { return "\(Int(seconds))s" }
        return String(format: "%.1fs", seconds)
    }

    static func addresses(_ machine: ControlV1.Machine) -> String {
        let all = machine.interfaces.flatMap { $0.addresses + $0.shadowAddresses }.map(\.value)
        return all.isEmpty ? "-" : all.joined(separator: ",")
    }

    static func state(_ machine: ControlV1.Machine) -> String {
        ControlService.stateName(machine.status.state)
    }
}

/// A command that talks to the controller: failures become one line on
/// stderr and exit 1, request mistakes exit 2.
protocol ControllerCommand: AsyncParsableCommand {
    func execute() async throws
}

extension ControllerCommand {
    func run() async throws {
        do {
            try await execute()
        } catch let error as CLIError {
            Output.errorLine("instancepoller: \(error.message)")
            throw ExitCode(error.kind == .usage ? 2 : 1)
        }
    }
}

/// Every command that reads secrets (the controller, the demo, credential
/// files, a config that names them) forbids core dumps and tracing first.
enum Hardening {
    static func apply() throws {
        do {
            try ProcessHardening.forbidDumpsAndTracing()
        } catch {
            throw CLIError(.failure, error.description)
        }
    }
}
