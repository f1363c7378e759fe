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

// MARK: - credentials

struct Credentials: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set, list and validate cloud credentials (secrets are never printed).",
        subcommands: [CredentialsSet.self, CredentialsList.self, CredentialsValidate.self]
    )
}

struct CredentialsSet: ControllerCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Add or replace a credential.",
        discussion: """
            The attributes are secrets, so they are never taken from the command line: give a YAML file of \
            attribute: value that only you can read (chmod 600), or pipe the same YAML on stdin with --file -. \
            Machines paused by an invalid credential are polled again once the new one validates.
            """
    )

    @Argument(help: "The provider the credential is for.") var provider: String
    @Argument(help: "The credential's name (machines refer to it).") var name: String
    @Option(help: "The auth type, e.g. access-key.") var authType: String
    @Option(help: ArgumentHelp("YAML file of attribute: value (0600), or - for stdin.", valueName: "FILE")) var file: String
    @Option(help: ArgumentHelp("Expiry, e.g. 2027-01-31T00:00:00Z.", valueName: "TIME")) var expires: String?
    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        // The secret will be in this process's memory: no core file, no
        // ptrace or /proc/<pid>/mem by other processes of this uid.
        try Hardening.apply()
        let attributes = try readAttributes()
        var expiresAt: Int64 = 0
        if let expires {
            guard let date = ISO8601DateFormatter().date(from: expires) else {
                throw CLIError(.usage, "--expires: expected a time such as 2027-01-31T00:00:00Z, not \"\(expires)\"")
            }
            expiresAt = Int64(date.timeIntervalSince1970 * 1e9)
        }
        let credential = try await controller.call(ControlV1.setCredential, .with {
            $0.provider = provider
            $0.name = name
            $0.authType = authType
            $0.attributes = attributes
            $0.expiresUnixNano = expiresAt
        }).credential
        if controller.format.isJSON { return try Output.json(credential) }
        Output.line("credential \(credential.provider)/\(credential.name) set (attributes: \(credential.attributeNames.joined(separator: ", ")))")
    }

    private func readAttributes() throws -> [String: String] {
        let text: String
        let shown = file == "-" ? "stdin" : file
        if file == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            // Only the invoking user's own file, private to them (as the
            // config's credential files).
            do {
                text = String(decoding: try SecretFile.contents(of: file), as: UTF8.self)
            } catch {
                throw CLIError(.usage, "--file: \(error.problem)")
            }
        }
        do {
            return try YAMLReader.parse(text, file: shown) { reader, root throws(YAMLFileError) in try reader.stringMap(root, "attributes") }
        } catch {
            // Never quote the content: it is secret.
            throw CLIError(.usage, "\(shown)\(error.line > 0 ? ":\(error.line)" : ""): expected YAML lines of attribute: value")
        }
    }
}

struct CredentialsList: ControllerCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List credentials: names, attribute names and validity, never values.")

    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let answer = try await controller.call(ControlV1.listCredentials, .init())
        if controller.format.isJSON { return try Output.json(answer) }
        Output.table(
            ["PROVIDER", "NAME", "AUTH", "ATTRIBUTES", "EXPIRES", "VALID"],
            answer.credentials.map {
                [$0.provider, $0.name, $0.authType, $0.attributeNames.joined(separator: ","), Output.time($0.expiresUnixNano),
                 $0.valid ? "yes" : "no: \($0.invalidReason)"]
            }
        )
    }
}

struct CredentialsValidate: ControllerCommand {
    static let configuration = CommandConfiguration(commandName: "validate", abstract: "Ask the provider's shim now whether a credential is usable.")

    @Argument(help: "The provider.") var provider: String
    @Argument(help: "The credential's name.") var name: String
    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let answer = try await controller.call(ControlV1.validateCredential, .with {
            $0.provider = provider
            $0.name = name
        })
        if controller.format.isJSON {
            try Output.json(answer)
        } else {
            Output.line(answer.valid ? "credential \(provider)/\(name) is valid" : "credential \(provider)/\(name) is not valid: \(answer.reason)")
        }
        if !answer.valid { throw ExitCode(1) }
    }
}
