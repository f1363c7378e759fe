import Core
import ControlAPI
import Foundation
import Logging
import Testing
import TestSupport

@_spi(Testing) @testable import Controller

/// Credential attributes sealed at rest (docs/DESIGN.md §6.7): AES-256-GCM
/// under the key file's first key, bound to the credential's provider/name;
/// the key file's rules; and `ResealCredentials` after a rotation. No
/// error ever holds a key or an attribute.
@Suite struct CredentialSealerTests {
    static let attributes = ["access-key": "AKIASECRETVALUE", "secret-key": "s3cr3t/with:colons"]
    static let keyA = [UInt8](repeating: 0xA1, count: 32)
    static let keyB = [UInt8](repeating: 0xB2, count: 32)

    static func line(_ key: [UInt8]) -> String { Data(key).base64EncodedString() }

    /// The problem `body` throws, as text ("no error" when it throws none).
    static func problem(_ body: () throws -> Void) -> String {
        do {
            try body()
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    /// Writes a key file of `lines` with `mode`.
    static func keyFile(_ directory: TemporaryDirectory, _ lines: [String], mode: mode_t = 0o600) throws -> String {
        let path = directory.file("credential.keys")
        try? FileManager.default.removeItem(atPath: path)
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        chmod(path, mode)
        return path
    }

    @Test func sealedValuesOpenToTheSameAttributesAndHideThem() throws {
        let sealer = try CredentialSealer(keys: [Self.keyA])
        let sealed = try sealer.seal(Self.attributes, credential: "aws/main")
        #expect(sealed.hasPrefix("sealed:v1:\(sealer.currentKeyID):"))
        #expect(sealer.currentKeyID.count == 8 && sealer.currentKeyID.allSatisfy(\.isHexDigit))
        for value in Self.attributes.values { #expect(!sealed.contains(value)) }
        #expect(!sealed.contains("access-key"), "the attribute names are sealed too")
        #expect(try sealer.open(sealed, credential: "aws/main") == Self.attributes)
        #expect(sealer.isCurrent(sealed))
        // A fresh nonce each time: the same attributes never seal alike.
        #expect(try sealer.seal(Self.attributes, credential: "aws/main") != sealed)
    }

    @Test func aValueSealedWithAKeyTheFileDoesNotHoldIsRefusedByItsID() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let a = try CredentialSealer(keys: [Self.keyA])
        let sealed = try a.seal(Self.attributes, credential: "aws/main")
        let path = try Self.keyFile(directory, [Self.line(Self.keyB)])
        let b = try CredentialSealer(keyFile: path)
        #expect(b.currentKeyID != a.currentKeyID)
        #expect(!b.isCurrent(sealed))
        let problem = Self.problem { _ = try b.open(sealed, credential: "aws/main") }
        #expect(problem == "credential aws/main is sealed with key \(a.currentKeyID), which the key file \(path) does not hold")
    }

    @Test func anAlteredValueDoesNotOpen() throws {
        let sealer = try CredentialSealer(keys: [Self.keyA])
        let sealed = try sealer.seal(Self.attributes, credential: "aws/main")
        let prefix = "sealed:v1:\(sealer.currentKeyID):"
        var box = try #require(Data(base64Encoded: String(sealed.dropFirst(prefix.count))))
        box[box.count / 2] ^= 0x01
        let problem = Self.problem { _ = try sealer.open(prefix + box.base64EncodedString(), credential: "aws/main") }
        #expect(problem == "credential aws/main does not open with key \(sealer.currentKeyID): it was altered or sealed for another credential")
        #expect(Self.problem { _ = try sealer.open(prefix + "not base64!", credential: "aws/main") } == "credential aws/main is sealed in an unknown form")
        #expect(Self.problem { _ = try sealer.open("sealed:v1:nocolon", credential: "aws/main") } == "credential aws/main is sealed in an unknown form")
    }

    /// The provider/name is bound in: a sealed value copied onto another
    /// credential's row does not open there.
    @Test func aValueMovedToAnotherCredentialDoesNotOpen() throws {
        let sealer = try CredentialSealer(keys: [Self.keyA])
        let sealed = try sealer.seal(Self.attributes, credential: "aws/main")
        #expect(Self.problem { _ = try sealer.open(sealed, credential: "aws/ops") }
            == "credential aws/ops does not open with key \(sealer.currentKeyID): it was altered or sealed for another credential")
        #expect(Self.problem { _ = try sealer.open(sealed, credential: "gce/main") }.hasPrefix("credential gce/main does not open"))
    }

    /// A store from before sealing holds plain JSON: it still opens, with a
    /// sealer or without; a sealed one without a sealer says what is missing.
    @Test func plainJSONStillOpens() throws {
        let sealer = try CredentialSealer(keys: [Self.keyA])
        let plain = try CredentialSealer.plainText(Self.attributes, credential: "aws/main")
        #expect(try sealer.open(plain, credential: "aws/main") == Self.attributes)
        #expect(!sealer.isCurrent(plain))
        #expect(try CredentialSealer.openPlain(plain, credential: "aws/main") == Self.attributes)
        let sealed = try sealer.seal(Self.attributes, credential: "aws/main")
        #expect(Self.problem { _ = try CredentialSealer.openPlain(sealed, credential: "aws/main") }
            == "credential aws/main is sealed and no credential_key_file is configured")
        let notAnObject = "[\"AKIASECRETVALUE\"]"
        let problem = Self.problem { _ = try sealer.open(notAnObject, credential: "aws/main") }
        #expect(problem == "credential aws/main has attributes that are not a JSON object of strings", "the value is never quoted")
    }

    @Test func aKeyFileOthersCanReadIsRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try Self.keyFile(directory, [Self.line(Self.keyA)], mode: 0o644)
        #expect(Self.problem { _ = try CredentialSealer(keyFile: path) }
            == "credential key file: \(path) is readable by others (mode 644); chmod 600 it")
        chmod(path, 0o640)
        #expect(Self.problem { _ = try CredentialSealer(keyFile: path) }.hasSuffix("(mode 640); chmod 600 it"))
        chmod(path, 0o600)
        #expect(try CredentialSealer(keyFile: path).currentKeyID == (try CredentialSealer(keys: [Self.keyA])).currentKeyID)
    }

    /// A bad line is named by its number; its content (a key, maybe) never
    /// appears. Comments and blank lines are fine.
    @Test func badLinesAreNamedByNumber() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let short = Data([UInt8](repeating: 7, count: 16)).base64EncodedString()
        var path = try Self.keyFile(directory, ["# rotated 2026-11", "", Self.line(Self.keyA), "  " + short])
        var problem = Self.problem { _ = try CredentialSealer(keyFile: path) }
        #expect(problem == "credential key file \(path) line 4: not base64 of 32 bytes")
        #expect(!problem.contains(short))
        path = try Self.keyFile(directory, [Self.line(Self.keyA), "not-base64-\(Self.line(Self.keyB))"])
        problem = Self.problem { _ = try CredentialSealer(keyFile: path) }
        #expect(problem == "credential key file \(path) line 2: not base64 of 32 bytes")
        #expect(!problem.contains(Self.line(Self.keyB)))
        path = try Self.keyFile(directory, ["# only a comment", ""])
        #expect(Self.problem { _ = try CredentialSealer(keyFile: path) } == "credential key file \(path) holds no key")
        let missing = directory.file("nope.keys")
        #expect(Self.problem { _ = try CredentialSealer(keyFile: missing) } == "credential key file: cannot read \(missing): No such file or directory")
        #expect(Self.problem { _ = try CredentialSealer(keys: []) } == "no credential key")
        #expect(Self.problem { _ = try CredentialSealer(keys: [Self.keyA, [1, 2, 3]]) } == "credential key 2 is 3 bytes, not 32")
    }

    /// A new first key seals after a reload; the old one still opens; a
    /// reload of a broken file keeps the keys there were.
    @Test func aReloadTakesANewFirstKeyAndKeepsTheOldOnesOpening() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try Self.keyFile(directory, [Self.line(Self.keyA)])
        let sealer = try CredentialSealer(keyFile: path)
        let old = try sealer.seal(Self.attributes, credential: "aws/main")
        let oldID = sealer.currentKeyID
        _ = try Self.keyFile(directory, [Self.line(Self.keyB), Self.line(Self.keyA)])
        try sealer.reload()
        #expect(sealer.currentKeyID != oldID)
        #expect(!sealer.isCurrent(old))
        #expect(try sealer.open(old, credential: "aws/main") == Self.attributes)
        let new = try sealer.seal(Self.attributes, credential: "aws/main")
        #expect(new.hasPrefix("sealed:v1:\(sealer.currentKeyID):"))

        _ = try Self.keyFile(directory, ["garbage"])
        #expect(Self.problem { try sealer.reload() } == "credential key file \(path) line 1: not base64 of 32 bytes")
        #expect(try sealer.open(new, credential: "aws/main") == Self.attributes, "the keys stayed")
        #expect(try sealer.open(old, credential: "aws/main") == Self.attributes)
    }

    /// `ResealCredentials`: the key file is read again first, every value
    /// not sealed with its first key is rewritten (plain ones too), and the
    /// answer says how many and with which key. Without a key file, or with
    /// a broken one, nothing is resealed.
    @Test func resealCredentialsReloadsTheKeyFileThenReseals() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = ManualPollClock()
        let logs = LogCapture()
        let path = try Self.keyFile(directory, [Self.line(Self.keyA)])
        let sealer = try CredentialSealer(keyFile: path)
        let storePath = directory.file("store.db")
        // A credential stored before sealing, then the store opened with the sealer.
        let plainStore = try SQLiteMachineStore(path: storePath, clock: clock, logger: logs.logger())
        try await plainStore.setCredential(StoredCredential(provider: "aws", name: "old", authType: "access-key", attributes: Self.attributes))
        try plainStore.close()
        let store = try SQLiteMachineStore(path: storePath, sealer: sealer, clock: clock, logger: logs.logger())
        defer { try? store.close() }
        for name in ["main", "ops"] {
            try await store.setCredential(StoredCredential(provider: "aws", name: name, authType: "access-key", attributes: Self.attributes))
        }
        let fleet = ProviderFleet(
            providers: [], runtimeDirectory: directory.path, clock: clock, settings: SupervisionSettings(), credentials: nil, logger: logs.logger())
        func service(_ sealer: CredentialSealer?) -> ControlService {
            ControlService(
                identity: .init(pid: 1, version: "test", startedAt: clock.now, storePath: storePath, runtimeDirectory: directory.path),
                store: store, fleet: fleet, clock: clock, environment: [:], sealer: sealer, logger: logs.logger())
        }

        let unsealed = await rpcError { _ = try await callControl(service(nil), ControlV1.resealCredentials, .init()) }
        #expect(unsealed?.code == .failedPrecondition)
        #expect(unsealed?.message.hasPrefix("no credential_key_file is configured") == true, "\(String(describing: unsealed))")

        // Only the plain one is not sealed with the first key yet.
        var answer = try await callControl(service(sealer), ControlV1.resealCredentials, .init())
        #expect(answer.resealed == 1)
        #expect(answer.keyID == sealer.currentKeyID)

        // Rotation: a new first key; the reseal reads the file itself.
        _ = try Self.keyFile(directory, [Self.line(Self.keyB), Self.line(Self.keyA)])
        answer = try await callControl(service(sealer), ControlV1.resealCredentials, .init())
        #expect(answer.resealed == 3)
        #expect(answer.keyID == (try CredentialSealer(keys: [Self.keyB])).currentKeyID)
        #expect(sealer.currentKeyID == answer.keyID)
        // Opens with the new key alone: every value was rewritten.
        let newOnly = try Self.keyFile(directory, [Self.line(Self.keyB)])
        try sealer.reload()
        #expect(try await store.credentials().map(\.attributes) == Array(repeating: Self.attributes, count: 3))
        #expect(try await callControl(service(sealer), ControlV1.resealCredentials, .init()).resealed == 0)

        _ = try Self.keyFile(directory, [Self.line(Self.keyB), "garbage"])
        let broken = await rpcError { _ = try await callControl(service(sealer), ControlV1.resealCredentials, .init()) }
        #expect(broken?.code == .failedPrecondition)
        #expect(broken?.message == "credential key file \(newOnly) line 2: not base64 of 32 bytes; nothing was resealed")

        let logged = logs.all.map { "\($0.message) \($0.metadata)" }.joined(separator: "\n")
        #expect(logged.contains("credentials resealed"))
        for secret in Array(Self.attributes.values) + [Self.line(Self.keyA), Self.line(Self.keyB)] { #expect(!logged.contains(secret)) }
    }
}
