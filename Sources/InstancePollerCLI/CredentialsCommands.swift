import ArgumentParser
import Controller
import Core
import Foundation
import SwiftProtobuf
import Support
import ControlAPI
#if canImport(Glibc)
import Glibc
#endif

// MARK: - credentials

struct Credentials: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set, list, validate and remove cloud credentials (secrets are never printed).",
        subcommands: [
            CredentialsSet.self, CredentialsList.self, CredentialsValidate.self, CredentialsRemove.self, CredentialsNewKey.self,
            CredentialsReseal.self,
        ]
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
        if controller.format.isStructured { return try Output.json(credential, controller.format) }
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
        if controller.format.isStructured { return try Output.json(answer, controller.format) }
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
        if controller.format.isStructured {
            try Output.json(answer, controller.format)
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
        if controller.format.isStructured {
            return try Output.json(
                text: "{\"provider\":\(Output.jsonString(provider)),\"name\":\(Output.jsonString(name)),\"removed\":true,\"machines\":\(answer.machines)}",
                controller.format)
        }
        let paused = answer.machines == 0 ? "" : "; \(answer.machines) machine\(answer.machines == 1 ? "" : "s") using it \(answer.machines == 1 ? "is" : "are") paused until it is set again"
        Output.line("credential \(provider)/\(name) removed\(paused)")
    }
}

// MARK: - key rotation (docs/DESIGN.md §6.7)

/// Works on a file, not on the controller; a ControllerCommand for its
/// one-line failures and exit statuses.
struct CredentialsNewKey: ControllerCommand {
    static let configuration = CommandConfiguration(
        commandName: "new-key",
        abstract: "Put a new credential key first in a credential_key_file (creating it 0600 if missing); prints the key's id.",
        discussion: """
            The first key of the file seals; every key in it opens, so the old keys stay below the new one. \
            Rotation: run this on every controller's key file (or copy the file), reload each controller \
            (SIGHUP), run `instancepoller credentials reseal` once, then delete the old lines and reload again. \
            The key itself is never printed.
            """
    )

    @Option(help: ArgumentHelp("The key file (the config's credential_key_file).", valueName: "PATH")) var file: String

    func execute() async throws {
        // A key will be in this process's memory.
        try Hardening.apply()
        Output.line(try Self.addKey(to: file))
    }

    /// Puts a new key first in `path` and returns its id. A missing file is
    /// created 0600 (never through a link); an existing one must pass the
    /// secret-file checks and read as a key file, and is replaced whole
    /// (a new file renamed over it), so that a controller reloading at that
    /// moment reads the old keys or the new ones, never half a file.
    static func addKey(to path: String) throws -> String {
        let line = CredentialSealer.newKeyLine()
        var info = stat()
        if lstat(path, &info) != 0 {
            guard errno == ENOENT else { throw CLIError(.failure, "--file: cannot stat \(path): \(String(cString: strerror(errno)))") }
            try write(line + "\n", creating: path)
        } else {
            guard info.st_mode & S_IFMT != S_IFLNK else {
                throw CLIError(.usage, "--file: \(path) is a symbolic link; give the file itself")
            }
            do {
                // The checks a controller makes: this user's, 0600, each line a key.
                _ = try CredentialSealer(keyFile: path)
            } catch {
                throw CLIError(.usage, "--file: \(error)")
            }
            let old: [UInt8]
            do {
                old = try SecretFile.contents(of: path, regularFileOnly: true)
            } catch {
                throw CLIError(.usage, "--file: \(error)")
            }
            let directory = (path as NSString).deletingLastPathComponent
            let name = (path as NSString).lastPathComponent
            let temporary = "\(directory.isEmpty ? "." : directory)/.\(name).new-\(getpid())"
            try write(line + "\n" + String(decoding: old, as: UTF8.self), creating: temporary)
            guard rename(temporary, path) == 0 else {
                let problem = String(cString: strerror(errno))
                unlink(temporary)
                throw CLIError(.failure, "--file: cannot replace \(path): \(problem)")
            }
        }
        do {
            // Read back as a controller will: the new key is first.
            return try CredentialSealer(keyFile: path).currentKeyID
        } catch {
            throw CLIError(.failure, "--file: \(error)")
        }
    }

    /// Writes `text` to a new file at `path`, 0600, flushed to disk: never
    /// one that exists, never through a link.
    private static func write(_ text: String, creating path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CLIError(.failure, "--file: cannot create \(path): \(String(cString: strerror(errno)))") }
        let file = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        do {
            try file.write(contentsOf: Data(text.utf8))
            try file.synchronize()
        } catch {
            unlink(path)
            throw CLIError(.failure, "--file: cannot write \(path): \(error.localizedDescription)")
        }
    }
}

struct CredentialsReseal: ControllerCommand {
    static let configuration = CommandConfiguration(
        commandName: "reseal",
        abstract: "Seal every stored credential again with the first key of the controller's credential_key_file.",
        discussion: """
            The controller reads its key file again first. Run it once, on any controller, after every controller \
            has the new key (see `credentials new-key`); then the old key's line can go.
            """
    )

    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let answer = try await controller.call(ControlV1.resealCredentials, .init())
        if controller.format.isStructured { return try Output.json(answer, controller.format) }
        Output.line("\(answer.resealed) credential\(answer.resealed == 1 ? "" : "s") resealed with key \(answer.keyID)")
    }
}
