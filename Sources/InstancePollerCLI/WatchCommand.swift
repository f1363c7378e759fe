import ArgumentParser
import Controller
import Core
import Foundation
import SwiftProtobuf
import Support
import ControlAPI

/// `watch`: the events log, then new events as they come.
struct Watch: ControllerCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the events log, then follow new events until interrupted.",
        discussion: """
            With neither --after nor --last only new events are printed, as they come. --after REV starts after \
            a revision, --last N with the N latest events. --no-follow prints what is there and stops (the last \
            \(Watch.defaultLast) events unless --after or --last says where to start). The table shows each \
            event's revision, time (RFC 3339), kind, source (external: the control API; poller: polled truth), \
            subject (a machine, or provider/credential) and what changed, old -> new, e.g.
              running (running) -> unknown (not-found): instance not found by the provider
            --format json or jsonl prints one event object per line; --format yaml one YAML document per event, each after `---`.
            """
    )

    @Option(help: ArgumentHelp("Start after this revision.", valueName: "REV")) var after: Int64?
    @Option(help: ArgumentHelp("Start with the N latest events.", valueName: "N")) var last: Int64?
    @Flag(help: "Print what is there and stop instead of following.") var noFollow = false
    @OptionGroup var controller: ControllerOptions

    /// Events `--no-follow` prints when not told where to start.
    static let defaultLast: Int64 = 20
    /// How long one call waits for a new event while following.
    static let followWait = Duration.seconds(10)

    func validate() throws {
        if after != nil, last != nil { throw ValidationError("give --after or --last, not both") }
        if let after, after < 0 { throw ValidationError("--after: expected a revision (0 or more), not \(after)") }
        if let last, last < 0 { throw ValidationError("--last: expected a number of events (0 or more), not \(last)") }
    }

    func execute() async throws {
        let client = try await controller.connect()
        defer { Task { await client.close() } }
        let latest = try await call(client, .with { $0.afterRevision = Int64.max }).latestRevision
        let back = last ?? (after == nil && noFollow ? Self.defaultLast : nil)
        var revision = after ?? max(0, latest - (back ?? 0))
        // Without --after or --last: only what comes from now on.
        let catchingUp = after != nil || back != nil
        var printer = Printer(format: controller.format, latest: latest)
        if !catchingUp { printer.header(subjects: []) }
        if controller.format == .table && !noFollow {
            Output.errorLine("following events after revision \(revision); Ctrl-C stops")
        }
        var request = Instancepoller_Control_V1_EventsRequest.with { $0.afterRevision = revision }
        while true {
            let answer = try await call(client, request)
            // --no-follow: what was there when it started, not what the
            // poller writes meanwhile.
            let events = noFollow ? answer.events.filter { $0.revision <= latest } : answer.events
            printer.print(events)
            revision = events.last?.revision ?? revision
            if noFollow, revision >= latest || events.isEmpty { return }
            if !answer.nextPageToken.isEmpty, events.count == answer.events.count {
                // More are there now: the next page at once.
                request = .with { $0.pageToken = answer.nextPageToken }
            } else {
                request = .with {
                    $0.afterRevision = revision
                    $0.waitNano = Self.followWait.totalNanoseconds
                }
            }
        }
    }

    private func call(_ client: RPCClient, _ request: Instancepoller_Control_V1_EventsRequest) async throws -> Instancepoller_Control_V1_EventsResponse {
        do {
            return try await client.call(ControlV1.events, request, timeout: .seconds(30))
        } catch {
            let rpc = RPCError(from: error)
            if rpc.code == .invalidArgument { throw CLIError(.usage, rpc.message) }
            throw CLIError(.failure, "the controller went away: \(rpc.message)")
        }
    }

    /// Prints events as they come: a table for people (a header, the
    /// revision right-aligned, columns of fixed width), or an event object
    /// per line.
    struct Printer {
        let format: OutputFormat
        /// Widths of REVISION, TIME, KIND, SOURCE and SUBJECT; nil until
        /// the header is printed.
        private(set) var widths: [Int]?
        let revisionWidth: Int

        static let header = ["REVISION", "TIME", "KIND", "SOURCE", "SUBJECT", "DETAIL"]
        /// "2026-11-24T22:13:25Z", "instance-status-changed", "external".
        static let timeWidth = 20, kindWidth = 23, sourceWidth = 8
        /// A subject column at least this wide, and no wider than the cap
        /// unless a subject needs it (it then pushes its line's detail right).
        static let subjectWidth = 16, subjectWidthCap = 48

        init(format: OutputFormat, latest: Int64) {
            self.format = format
            revisionWidth = max(Self.header[0].count, String(latest).count + 2)
        }

        /// Prints the header, the subject column as wide as the widest of
        /// `subjects` (the first page).
        mutating func header(subjects: [String]) {
            guard format == .table, widths == nil else { return }
            let widest = subjects.map(\.count).max() ?? 0
            let widths = [revisionWidth, Self.timeWidth, Self.kindWidth, Self.sourceWidth, min(max(Self.subjectWidth, widest), Self.subjectWidthCap)]
            self.widths = widths
            Output.line(Self.line(Self.header, widths: widths))
        }

        /// Prints a page (the first one prints the table's header, even
        /// when it is empty).
        mutating func print(_ events: [ControlV1.Event]) {
            var text = ""
            if format == .yaml {
                // A YAML stream: a document per event.
                for event in events {
                    text += "---\n" + ((try? JSONToYAML.document(event.jsonString(options: Output.jsonOptions))) ?? "{}\n")
                }
            } else if format.isStructured {
                for event in events { text += ((try? event.jsonString(options: Output.jsonOptions)) ?? "{}") + "\n" }
            } else {
                let rows = events.map(Self.row)
                header(subjects: rows.map { $0[4] })
                for row in rows { text += Self.line(row, widths: widths!) + "\n" }
            }
            if !text.isEmpty { Output.write(text) }
        }

        /// The revision right-aligned, the other columns left-aligned.
        static func line(_ cells: [String], widths: [Int]) -> String {
            var cells = cells
            cells[0] = String(repeating: " ", count: max(0, widths[0] - cells[0].count)) + cells[0]
            return Output.tableLine(cells, widths: widths)
        }

        static func row(_ event: ControlV1.Event) -> [String] {
            let subject = event.machineID.isEmpty ? event.credential : event.machineID
            return ["\(event.revision)", Output.time(event.atUnixNano), event.kind, event.source,
                    TextEscaping.oneLine(subject.isEmpty ? "-" : subject), TextEscaping.oneLine(detail(event))]
        }

        /// What changed: `old -> new` for the poller's writes.
        static func detail(_ event: ControlV1.Event) -> String {
            let (old, new) = (event.oldValue, event.newValue)
            switch event.kind {
            case MachineEvent.Kind.machinePolled.rawValue:
                // Interfaces with the same addresses, or a poll error that
                // appeared, changed or cleared.
                if old.isEmpty && new.isEmpty { return "interfaces changed, same addresses" }
                return "poll error: \(old.isEmpty ? "none" : old) -> \(new.isEmpty ? "none" : new)"
            case MachineEvent.Kind.addressesChanged.rawValue:
                return "\(old.isEmpty ? "none" : old) -> \(new.isEmpty ? "none" : new)"
            default:
                if old.isEmpty && new.isEmpty { return "-" }
                return "\(old.isEmpty ? "-" : old) -> \(new.isEmpty ? "-" : new)"
            }
        }
    }
}
