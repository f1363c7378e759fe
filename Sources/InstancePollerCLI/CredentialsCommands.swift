import ArgumentParser
import Controller
import Core
import Foundation
import SwiftProtobuf
import Support
import ControlAPI

// MARK: - credentials

struct Credentials: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set, list, validate and remove cloud credentials (secrets are never printed).",
        subcommands: [CredentialsSet.self, CredentialsList.self, CredentialsValidate.self, CredentialsRemove.self]
    )
}

struct CredentialsSet: ControllerCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Add or replace a credential.",
        discussion: """
            The attributes are secrets, so they are never taken from the command line: give a YAML file of \
            attribute: value that only you can read (chmod 600), or pipe the same YAML on stdin with --file -. \
            Machines paused by an invalid credential are polled again once the new one validates. An expiry \
            in the past is refused unless --allow-expired is given.
            """
    )

    @Argument(help: "The provider the credential is for.") var provider: String
    @Argument(help: "The credential's name (machines refer to it).") var name: String
    @Option(help: "The auth type, e.g. access-key.") var authType: String
    @Option(help: ArgumentHelp("YAML file of attribute: value (0600), or - for stdin.", valueName: "FILE")) var file: String
    @Option(help: ArgumentHelp("Expiry, e.g. 2027-01-31T00:00:00Z.", valueName: "TIME")) var expires: String?
    @Flag(help: "Set it even though --expires is in the past (its machines pause: the gate refuses it).") var allowExpired = false
    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        // Before the secret is read: a mistake costs nothing.
        let expiresAt = try Self.expiry(expires, allowExpired: allowExpired, now: Date())
        // The secret will be in this process's memory: no core file, no
        // ptrace or /proc/<pid>/mem by other processes of this uid.
        try Hardening.apply()
        let attributes = try readAttributes()
        let credential = try await controller.call(ControlV1.setCredential, .with {
            $0.provider = provider
            $0.name = name
            $0.authType = authType
            $0.attributes = attributes
            $0.expiresUnixNano = expiresAt
            $0.allowExpired = allowExpired
        }).credential
        if controller.format.isJSON { return try Output.json(credential) }
        Output.line("credential \(credential.provider)/\(credential.name) set (attributes: \(credential.attributeNames.joined(separator: ", ")))")
    }

    /// `--expires` as nanoseconds since the epoch (0: none); a time in the
    /// past is a usage error unless `allowExpired`.
    static func expiry(_ text: String?, allowExpired: Bool, now: Date) throws -> Int64 {
        guard let text else { return 0 }
        guard let date = ISO8601DateFormatter().date(from: text) else {
            throw CLIError(.usage, "--expires: expected a time such as 2027-01-31T00:00:00Z, not \(MachineFields.quoted(text))")
        }
        let nanoseconds = Int64(date.timeIntervalSince1970 * 1e9)
        if date <= now, !allowExpired {
            throw CLIError(.usage, "--expires: \(Timestamp(nanosecondsSinceEpoch: nanoseconds)) is in the past; pass --allow-expired to set it anyway")
        }
        return nanoseconds
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
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Ask the provider's shim now whether a credential is usable.",
        discussion: "One marked invalid that the shim finds valid is marked valid again, and its paused machines are polled at once."
    )

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

struct CredentialsRemove: ControllerCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Remove a credential.",
        discussion: """
            Refused while machines use it, saying how many. With --force it goes anyway: its machines stay and \
            are not polled (their poll error says the credential does not exist) until a credential of that \
            name is set again.
            """
    )

    @Argument(help: "The provider.") var provider: String
    @Argument(help: "The credential's name.") var name: String
    @Flag(help: "Remove it even while machines use it (they pause).") var force = false
    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let answer = try await controller.call(ControlV1.removeCredential, .with {
            $0.provider = provider
            $0.name = name
            $0.force = force
        })
        if controller.format.isJSON {
            return Output.line(
                "{\"provider\":\(Output.jsonString(provider)),\"name\":\(Output.jsonString(name)),\"removed\":true,\"machines\":\(answer.machines)}")
        }
        let paused = answer.machines == 0 ? "" : "; \(answer.machines) machine\(answer.machines == 1 ? "" : "s") using it \(answer.machines == 1 ? "is" : "are") paused until it is set again"
        Output.line("credential \(provider)/\(name) removed\(paused)")
    }
}
