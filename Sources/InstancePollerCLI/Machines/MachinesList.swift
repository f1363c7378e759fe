import ArgumentParser
import Controller
import Core
import Foundation
import SwiftProtobuf
import Support
import ControlAPI

/// `machines list`: the fleet page by page, printed as it comes, so that
/// memory stays flat however many machines there are.
struct MachinesList: ControllerCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List machines with their polled status, filtered by the controller.",
        discussion: """
            Machines come in id order, a page at a time, and are printed as they come: a table (its columns sized \
            by the first page), --format json (one JSON array) or --format jsonl (one machine per line). Filters \
            combine: e.g. --provider aws --with-error. --ids-only prints just the ids, one per line, e.g. to pipe \
            into `instancepoller machines remove --file -`.
            """
    )

    @Option(help: "Only this provider's machines.") var provider: String?
    @Option(help: "Only machines using this credential.") var credential: String?
    @Option(help: "Only machines in this instance state: running, stopped, not-found, unknown, …") var state: String?
    @Option(help: "Only machines in this poll group: short, long or none (not tracked).") var group: String?
    @Option(help: "Only machines with this agent status: none, pending, started, error or down.") var agentStatus: String?
    @Flag(help: "Only machines whose last poll failed.") var withError = false
    @Flag(help: "Print only the ids, one per line.") var idsOnly = false
    @Option(help: "Machines per request (1 to 10000).") var pageSize: UInt32 = 1000
    @OptionGroup var controller: ControllerOptions

    func validate() throws {
        guard (1...10_000).contains(pageSize) else { throw ValidationError("--page-size: expected 1 to 10000, not \(pageSize)") }
    }

    static let header = ["ID", "PROVIDER", "INSTANCE", "STATE", "AGENT", "GROUP", "ADDRESSES", "ERROR"]

    func execute() async throws {
        let client = try await controller.connect()
        defer { Task { await client.close() } }
        var request = Instancepoller_Control_V1_ListMachinesRequest.with {
            $0.provider = provider ?? ""
            $0.credential = credential ?? ""
            $0.state = state ?? ""
            $0.group = group ?? ""
            $0.agentStatus = agentStatus ?? ""
            $0.withError = withError
            $0.idsOnly = idsOnly
            $0.pageSize = pageSize
        }
        var printer = Printer(format: idsOnly ? nil : controller.format)
        repeat {
            let page = try await controller.call(ControlV1.listMachines, request, on: client)
            printer.print(page.machines)
            request.pageToken = page.nextPageToken
        } while !request.pageToken.isEmpty
        printer.finish()
    }

    /// Prints pages as they come; nil format: ids only.
    struct Printer {
        let format: OutputFormat?
        private var widths: [Int]?
        private var printed = 0

        init(format: OutputFormat?) { self.format = format }

        mutating func print(_ machines: [ControlV1.Machine]) {
            var text = ""
            switch format {
            case nil:
                for machine in machines { text += machine.id + "\n" }
            case .table:
                let rows = machines.map(Self.row)
                if widths == nil {
                    let widths = Output.columnWidths(MachinesList.header, rows)
                    self.widths = widths
                    text += Output.tableLine(MachinesList.header, widths: widths) + "\n"
                }
                for row in rows { text += Output.tableLine(row, widths: widths!) + "\n" }
            case .json:
                for machine in machines {
                    text += (printed == 0 ? "[\n" : ",\n") + Self.json(machine)
                    printed += 1
                }
            case .jsonl:
                for machine in machines { text += Self.json(machine) + "\n" }
            case .yaml:
                // A block sequence, an item per machine as it comes.
                for machine in machines {
                    text += (try? JSONToYAML.sequenceItem(Self.json(machine))) ?? "- {}\n"
                    printed += 1
                }
            }
            Output.write(text)
        }

        mutating func finish() {
            switch format {
            case .json: Output.write(printed == 0 ? "[]\n" : "\n]\n")
            case .yaml where printed == 0: Output.line("[]")
            case .table where widths == nil: Output.line(Output.tableLine(MachinesList.header, widths: MachinesList.header.map(\.count)))
            default: break
            }
        }

        static func json(_ machine: ControlV1.Machine) -> String {
            (try? machine.jsonString(options: Output.jsonOptions)) ?? "{}"
        }

        static func row(_ machine: ControlV1.Machine) -> [String] {
            [machine.id, machine.provider, machine.instanceID.isEmpty ? "-" : machine.instanceID, Output.state(machine), machine.agentStatus,
             machine.group.isEmpty ? "-" : "\(machine.group) \(Output.duration(nanoseconds: machine.intervalNano))",
             machine.interfacesOmitted ? "(too many)" : Output.addresses(machine), machine.pollError.isEmpty ? "-" : machine.pollError]
        }
    }
}
