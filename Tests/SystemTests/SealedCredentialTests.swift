import Controller
import Core
import Foundation
import GRDB
import Testing
import TestSupport

/// Credentials sealed at rest with the real binaries (docs/DESIGN.md §6.7):
/// a controller with `credential_key_file` on a SQLite store writes no
/// attribute in plain text; a key rotation — `credentials new-key`,
/// SIGHUP, `credentials reseal`, the old line dropped, SIGHUP — leaves
/// every row sealed with the new key and the controller polling with the
/// credential; no CLI output or log line holds a key or a secret.
@Suite("Sealed credentials", .serialized)
struct SealedCredentialTests {
    static let secrets = ["letmein", "spare-s3cret-value"]

    /// The store's credential rows as they are on disk: (provider/name, attributes column).
    static func rows(_ h: ControllerHarness) throws -> [String: String] {
        let queue = try DatabaseQueue(path: h.storePath)
        defer { try? queue.close() }
        return try queue.read { db in
            Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT provider, name, attributes FROM credentials").map { row in
                ("\(row["provider"] as String)/\(row["name"] as String)", row["attributes"] as String)
            })
        }
    }

    /// Every byte of the store's files (the database, its WAL).
    static func rawStore(_ h: ControllerHarness) -> Data {
        ["", "-wal"].reduce(into: Data()) { all, suffix in
            all += FileManager.default.contents(atPath: h.storePath + suffix) ?? Data()
        }
    }

    /// The key file's lines that hold keys.
    static func keyLines(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }
    }

    @Test func credentialsAreSealedAtRestAndAKeyRotationResealsThem() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let keyFile = h.directory.file("credential.keys")
        var outputs: [String] = []
        func cli(_ arguments: [String], stdin: String? = nil, runtimeDir: Bool = true) async throws -> (status: Int32, stdout: String, stderr: String) {
            let result = try await h.cli(arguments, stdin: stdin, runtimeDir: runtimeDir)
            outputs += [result.stdout, result.stderr]
            return result
        }

        // A new key file: created 0600, one key, only its id printed.
        var result = try await cli(["credentials", "new-key", "--file", keyFile], runtimeDir: false)
        #expect(result.status == 0, "\(result.stderr)")
        let firstID = result.stdout.trimmingCharacters(in: .newlines)
        #expect(firstID.count == 8 && firstID.allSatisfy(\.isHexDigit), "\(result.stdout)")
        var info = stat()
        #expect(lstat(keyFile, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let firstKey = try #require(try Self.keyLines(keyFile).first)
        #expect(try Self.keyLines(keyFile).count == 1)
        #expect(Data(base64Encoded: firstKey)?.count == 32)

        let scenario = try h.scenario("sealed", ControllerHarness.runningInstances([("c-1", "10.7.0.1"), ("c-2", "10.7.0.2")], extra: """
            credentials:
              - name: main
                attributes: {token: letmein}
            """))
        try h.writeConfig(
            providers: [h.fakeProvider("cloud", scenario: scenario)],
            settings: ControllerHarness.fastSettings + "\ncredential_key_file: credential.keys")
        let controller = try await h.start()
        result = try await cli(["credentials", "set", "cloud", "spare", "--auth-type", "token", "--file", "-"], stdin: "token: spare-s3cret-value\n")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try await cli(["machines", "add", "m1", "--provider", "cloud", "--credential", "main", "--instance-id", "c-1"]).status == 0)
        try await h.waitForMachines("m1 to be polled with the sealed credential") { $0["m1"]?.addressValues == ["10.7.0.1"] }

        // On disk: every row sealed with the first key, no attribute in plain text.
        var rows = try Self.rows(h)
        #expect(Set(rows.keys) == ["cloud/main", "cloud/spare"])
        // Booleans, so that a failure does not print the value.
        for (credential, stored) in rows { #expect(Bool(stored.hasPrefix("sealed:v1:\(firstID):")), "\(credential) is not sealed with key \(firstID)") }
        let raw = Self.rawStore(h)
        #expect(!raw.isEmpty)
        for secret in Self.secrets + [firstKey] { #expect(raw.range(of: Data(secret.utf8)) == nil, "\(secret.count)-character value in the store file") }

        // Rotation, step 1: a new key first, the old one kept below it.
        result = try await cli(["credentials", "new-key", "--file", keyFile], runtimeDir: false)
        #expect(result.status == 0, "\(result.stderr)")
        let secondID = result.stdout.trimmingCharacters(in: .newlines)
        #expect(secondID.count == 8 && secondID != firstID)
        let lines = try Self.keyLines(keyFile)
        #expect(lines.count == 2 && lines[1] == firstKey)
        let secondKey = lines[0]
        #expect(lstat(keyFile, &info) == 0 && info.st_mode & 0o777 == 0o600 && info.st_mode & S_IFMT == S_IFREG)

        // Step 2: reload; it seals with the new key from now on.
        var before = controller.stderrLines.lines.count
        kill(controller.pid, SIGHUP)
        var reloaded = try await controller.stderrLines.waitForLine(containing: "credential keys reloaded", from: before)
        #expect(logValue("key", in: reloaded.line) == secondID, "\(reloaded.line)")
        _ = try await controller.stderrLines.waitForLine(containing: "config reloaded", from: before)

        // Step 3: reseal, once.
        result = try await cli(["credentials", "reseal"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "2 credentials resealed with key \(secondID)\n")
        rows = try Self.rows(h)
        for (credential, stored) in rows { #expect(Bool(stored.hasPrefix("sealed:v1:\(secondID):")), "\(credential) is not sealed with key \(secondID)") }
        result = try await cli(["credentials", "reseal", "--format", "json"])
        // Nothing left to reseal: proto3 JSON leaves the zero count out.
        #expect(result.stdout == "{\"key_id\":\"\(secondID)\"}\n")

        // Step 4: the old line goes; reload; the new key alone opens every row.
        try (secondKey + "\n").write(toFile: keyFile, atomically: false, encoding: .utf8)
        before = controller.stderrLines.lines.count
        kill(controller.pid, SIGHUP)
        reloaded = try await controller.stderrLines.waitForLine(containing: "credential keys reloaded", from: before)
        #expect(logValue("key", in: reloaded.line) == secondID)
        _ = try await controller.stderrLines.waitForLine(containing: "config reloaded", from: before)
        result = try await cli(["credentials", "validate", "cloud", "main"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "credential cloud/main is valid\n")
        #expect(try await cli(["machines", "add", "m2", "--provider", "cloud", "--credential", "main", "--instance-id", "c-2"]).status == 0)
        try await h.waitForMachines("m2 to be polled after the rotation") { $0["m2"]?.addressValues == ["10.7.0.2"] }
        result = try await cli(["credentials", "list"])
        #expect(result.stdout.contains("spare") && result.stdout.contains("token"))

        #expect(try await h.stop(controller) == 0)
        let said = (outputs + controller.stderrLines.lines).joined(separator: "\n")
        for secret in Self.secrets + [firstKey, secondKey] { #expect(!said.contains(secret), "a \(secret.count)-character secret was printed or logged") }
        let rawAfter = Self.rawStore(h)
        for secret in Self.secrets + [firstKey, secondKey] { #expect(rawAfter.range(of: Data(secret.utf8)) == nil) }
    }

    /// `new-key` writes only a file it can trust: an existing one must pass
    /// the key file's checks (this user's, 0600, every line a key), a link
    /// is refused, and a problem names the file (and line), never a key.
    @Test func newKeyRefusesAKeyFileItCannotTrust() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let keyFile = h.directory.file("keys")
        let key = Data([UInt8](repeating: 0x5A, count: 32)).base64EncodedString()
        func newKey(_ path: String) async throws -> (status: Int32, stdout: String, stderr: String) {
            try await h.cli(["credentials", "new-key", "--file", path], runtimeDir: false)
        }

        #expect(FileManager.default.createFile(atPath: keyFile, contents: Data("\(key)\n".utf8), attributes: [.posixPermissions: 0o644]))
        var result = try await newKey(keyFile)
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: --file: credential key file: \(keyFile) is readable by others (mode 644); chmod 600 it\n")
        chmod(keyFile, 0o600)
        try "# keys\n\(key)\nAAAA\n".write(toFile: keyFile, atomically: false, encoding: .utf8)
        result = try await newKey(keyFile)
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: --file: credential key file \(keyFile) line 3: not base64 of 32 bytes\n")
        #expect(try String(contentsOfFile: keyFile, encoding: .utf8) == "# keys\n\(key)\nAAAA\n", "left as it was")

        let link = h.directory.file("keys-link")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: keyFile)
        result = try await newKey(link)
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: --file: \(link) is a symbolic link; give the file itself\n")

        let missing = h.directory.file("no-such-dir/keys")
        result = try await newKey(missing)
        #expect(result.status == 1)
        #expect(result.stderr == "instancepoller: --file: cannot create \(missing): No such file or directory\n")

        // A good file keeps its comment and key below the new one.
        try "# keys\n\(key)\n".write(toFile: keyFile, atomically: false, encoding: .utf8)
        result = try await newKey(keyFile)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = try String(contentsOfFile: keyFile, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.count == 4 && lines[1...] == ["# keys", key, ""])
        #expect(Data(base64Encoded: lines[0])?.count == 32)
        #expect(!result.stdout.contains(lines[0]) && !result.stdout.contains(key))
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.directory.path).filter { $0.contains(".new-") }.isEmpty, "no file left behind")
    }
}
