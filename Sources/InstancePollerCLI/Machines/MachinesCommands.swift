import ArgumentParser
import Controller
import Core
import Foundation
import SwiftProtobuf
import ControlAPI

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
        if controller.format.isStructured { return try Output.json(answer.machine, controller.format) }
        Output.line("added machine \(answer.machine.id)")
    }
}

struct MachinesShow: ControllerCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one machine in full: status, interfaces, schedule.")

    @Argument(help: "The machine's id.") var id: String
    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let answer = try await controller.call(ControlV1.getMachine, .with { $0.id = id })
        if controller.format.isStructured { return try Output.json(answer, controller.format) }
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
        if controller.format.isStructured { return try Output.json(machine, controller.format) }
        Output.line("machine \(machine.id): agent \(machine.agentStatus)")
    }
}
