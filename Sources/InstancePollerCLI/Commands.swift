import ArgumentParser
import Controller
import Core
import Foundation
import SwiftProtobuf

// MARK: - status

struct Status: ControllerCommand {
    static let configuration = CommandConfiguration(abstract: "Show the controller, its providers' shims and its machines at a glance.")

    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let status = try await controller.call(ControlV1.status, .init())
        if controller.format.isJSON { return try Output.json(status) }
        Output.line("controller  pid \(status.pid), version \(status.version), up since \(Output.time(status.startedUnixNano))")
        Output.line("store       \(status.storePath) (revision \(status.revision))")
        Output.line("runtime     \(status.runtimeDirectory)")
        let states = status.machinesByState.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        Output.line("machines    \(status.machines) (\(states.isEmpty ? "none" : states)); short group \(status.shortGroup), long group \(status.longGroup)")
        Output.line("polling     \(status.pollErrors) with a poll error, \(status.overdue) overdue, \(status.notFound) not found by their provider")
        Output.line("credentials \(status.credentials) (\(status.invalidCredentials) invalid)")
        Output.line()
        ProvidersList.render(status.providers)
    }
}

// MARK: - machines

struct Machines: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add, remove, list and inspect machine records.",
        subcommands: [MachinesAdd.self, MachinesRemove.self, MachinesList.self, MachinesShow.self, MachinesSetAgentStatus.self, MachinesImport.self]
    )
}

struct MachinesAdd: ControllerCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a machine; it is polled at once.")

    @Argument(help: "The machine's id.") var id: String
    @Option(help: "The configured provider that serves its cloud.") var provider: String
    @Option(help: "The name of the credential its cloud calls use.") var credential: String
    @Option(help: "The cloud's instance id (leave out while not provisioned).") var instanceId: String = ""
    @Flag(help: "Manually provisioned: never polled, marked running.") var manual = false
    @Option(help: "none (agentless), pending, started, error or down.") var agentStatus: String = "none"
    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let answer = try await controller.call(ControlV1.addMachine, .with {
            $0.id = id
            $0.provider = provider
            $0.credential = credential
            $0.instanceID = instanceId
            $0.manual = manual
            $0.agentStatus = agentStatus
        })
        if controller.format.isJSON { return try Output.json(answer.machine) }
        Output.line("added machine \(answer.machine.id)")
    }
}

struct MachinesShow: ControllerCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one machine in full: status, interfaces, schedule.")

    @Argument(help: "The machine's id.") var id: String
    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let answer = try await controller.call(ControlV1.getMachine, .with { $0.id = id })
        if controller.format.isJSON { return try Output.json(answer) }
        let machine = answer.machine
        Output.line("id           \(machine.id)")
        Output.line("provider     \(machine.provider) (credential \(machine.credential))")
        Output.line("instance     \(machine.instanceID.isEmpty ? "- (not provisioned)" : machine.instanceID)")
        Output.line("life         \(machine.life)\(machine.manual ? ", manual" : "")")
        var agent = "agent        \(machine.agentStatus)"
        if !machine.agentMessage.isEmpty { agent += ": \(machine.agentMessage)" }
        if machine.agentStartedUnixNano != 0 { agent += ", last started \(Output.time(machine.agentStartedUnixNano))" }
        Output.line(agent)
        Output.line("status       \(Self.describe(machine.status)), updated \(Output.time(machine.statusUpdatedUnixNano))")
        if !machine.group.isEmpty {
            Output.line("schedule     \(machine.group) group, every \(Output.duration(nanoseconds: machine.intervalNano)), next \(Output.time(machine.dueUnixNano))")
        }
        if !machine.pollError.isEmpty { Output.line("poll error   \(machine.pollError)") }
        for interface in machine.interfaces {
            let name = interface.interfaceName.isEmpty ? "#\(interface.deviceIndex)" : interface.interfaceName
            var header = "interface    \(name)"
            if !interface.macAddress.isEmpty { header += " mac \(interface.macAddress)" }
            if !interface.providerID.isEmpty { header += " id \(interface.providerID)" }
            if !interface.providerSubnetID.isEmpty { header += " subnet \(interface.providerSubnetID)" }
            if !interface.providerNetworkID.isEmpty { header += " network \(interface.providerNetworkID)" }
            if interface.primary { header += " primary" }
            if interface.disabled { header += " disabled" }
            Output.line(header)
            for address in interface.addresses { Output.line("  address    \(address.value) \(Self.describe(address))") }
            for address in interface.shadowAddresses { Output.line("  shadow     \(address.value) \(Self.describe(address))") }
        }
        if machine.interfacesOmitted { Output.line("interfaces   (too many to show in one answer)") }
        if !answer.statusHistory.isEmpty {
            Output.line("history      (last \(answer.statusHistory.count) status changes, newest first)")
            for change in answer.statusHistory {
                Output.line("  \(Output.time(change.atUnixNano))  \(Self.describe(change.status))")
            }
        }
    }

    /// "running (running)", "unknown (not-found): instance not found by the provider".
    static func describe(_ status: ProviderV1.InstanceStatus) -> String {
        var text = ControlService.stateName(status.state)
        if !status.rawStatus.isEmpty { text += " (\(status.rawStatus))" }
        if !status.message.isEmpty { text += ": \(status.message)" }
        return text
    }

    static func describe(_ address: ProviderV1.Address) -> String {
        let scope: String
        switch address.scope {
        case .public: scope = "public"
        case .cloudLocal: scope = "cloud-local"
        case .machineLocal: scope = "machine-local"
        case .linkLocal: scope = "link-local"
        default: scope = "unknown scope"
        }
        return address.cidr.isEmpty ? "(\(scope))" : "(\(scope), \(address.cidr))"
    }
}

struct MachinesSetAgentStatus: ControllerCommand {
    static let configuration = CommandConfiguration(commandName: "set-agent-status", abstract: "Record the status of a machine's agent.")

    @Argument(help: "The machine's id.") var id: String
    @Argument(help: "none, pending, started, error or down.") var status: String
    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let machine = try await controller.call(ControlV1.setAgentStatus, .with {
            $0.id = id
            $0.agentStatus = status
        }).machine
        if controller.format.isJSON { return try Output.json(machine) }
        Output.line("machine \(machine.id): agent \(machine.agentStatus)")
    }
}

// MARK: - providers

struct Providers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List providers' shims, or swap one live.",
        subcommands: [ProvidersList.self, ProvidersSwap.self]
    )
}

struct ProvidersList: ControllerCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the providers and their shims.")

    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let answer = try await controller.call(ControlV1.listProviders, .init())
        if controller.format.isJSON { return try Output.json(answer) }
        Self.render(answer.providers)
    }

    static func render(_ providers: [ControlV1.ProviderInfo]) {
        Output.table(
            ["PROVIDER", "CLOUD", "STATE", "PID", "RESTARTS", "SHIM", "COMMAND", "LAST PROBLEM"],
            providers.map {
                [$0.name, $0.cloudType, $0.state, $0.pid == 0 ? "-" : "\($0.pid)", "\($0.restarts)",
                 $0.shimName.isEmpty ? "-" : "\($0.shimName) \($0.shimVersion)",
                 ([$0.command] + $0.args).joined(separator: " "), $0.lastProblem.isEmpty ? "-" : $0.lastProblem]
            }
        )
    }
}

struct ProvidersSwap: ControllerCommand {
    static let configuration = CommandConfiguration(
        commandName: "swap",
        abstract: "Swap a provider's shim live, without restarting the controller.",
        discussion: """
            The new shim is started, shaken hands with and must accept the provider's credentials before new \
            calls go to it; the old one finishes its calls in flight and is stopped. If the new shim fails, the \
            old one keeps serving and the error says why. Example:
              instancepoller providers swap demo -- provider-shim fake --scenario other.yaml
            """
    )

    @Argument(help: "The provider.") var provider: String
    @Option(name: .customLong("env"), help: ArgumentHelp("An environment variable the new shim may see (repeat).", valueName: "NAME"))
    var environment: [String] = []
    @OptionGroup var controller: ControllerOptions
    @Argument(parsing: .postTerminator, help: "After --: the new shim's command and its arguments.")
    var command: [String] = []

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("give the new shim's command after --, e.g. -- provider-shim fake --scenario s.yaml") }
    }

    func execute() async throws {
        var executable = command[0]
        // A relative path is relative to where the CLI runs, not the controller.
        if executable.contains("/"), !executable.hasPrefix("/") {
            executable = URL(fileURLWithPath: executable, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath + "/")).standardizedFileURL.path
        }
        let answer = try await controller.call(ControlV1.swapProvider, .with {
            $0.provider = provider
            $0.command = executable
            $0.args = Array(command.dropFirst())
            $0.env = environment
        })
        if controller.format.isJSON { return try Output.json(answer.provider) }
        Output.line("provider \(provider) swapped: shim pid \(answer.provider.pid) (\(answer.provider.shimName) \(answer.provider.shimVersion))")
    }
}

// MARK: - watch

struct Watch: ControllerCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the events log after a revision, then follow new events until interrupted."
    )

    @Option(help: "Start after this revision (default: only new events).") var after: Int64?
    @Flag(help: "Print what is there and stop instead of following.") var noFollow = false
    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let client = try await controller.connect()
        defer { Task { await client.close() } }
        var revision: Int64
        if let after {
            revision = after
        } else {
            revision = try await call(client, .with { $0.afterRevision = Int64.max }).latestRevision
        }
        if controller.format == .table && !noFollow {
            FileHandle.standardError.write(Data("following events after revision \(revision); Ctrl-C stops\n".utf8))
        }
        while true {
            let answer = try await call(client, .with {
                $0.afterRevision = revision
                $0.waitNano = noFollow ? 0 : Duration.seconds(10).totalNanoseconds
            })
            for event in answer.events {
                if controller.format.isJSON {
                    try Output.json(event)
                } else {
                    let subject = event.machineID.isEmpty ? event.credential : event.machineID
                    var line = "\(event.revision)  \(Output.time(event.atUnixNano))  \(event.kind)  \(event.source)  \(subject)"
                    if !event.oldValue.isEmpty || !event.newValue.isEmpty {
                        line += "  \(event.oldValue.isEmpty ? "-" : event.oldValue) -> \(event.newValue.isEmpty ? "-" : event.newValue)"
                    }
                    Output.line(line)
                }
                revision = event.revision
            }
            if noFollow && answer.events.isEmpty { return }
        }
    }

    private func call(_ client: RPCClient, _ request: Instancepoller_Control_V1_EventsRequest) async throws -> Instancepoller_Control_V1_EventsResponse {
        do {
            return try await client.call(ControlV1.events, request, timeout: .seconds(30))
        } catch {
            throw CLIError(.failure, "the controller went away: \(RPCError(from: error).message)")
        }
    }
}
