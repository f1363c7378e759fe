internal import Crypto
internal import Foundation
internal import NIOConcurrencyHelpers

/// Credential attributes at rest (docs/DESIGN.md §6.7): sealed with
/// AES-256-GCM under a key from a 0600 key file, the credential's
/// "provider/name" bound in as associated data (a sealed value copied onto
/// another credential does not open).
///
/// The key file holds one key per line, base64 of 32 random bytes
/// (`instancepoller credentials new-key` writes one); `#` starts a comment.
/// The first key seals; every key opens. Rotation: put a new key first,
/// reload every controller, run `instancepoller credentials reseal`, then
/// drop the old line.
///
/// A stored value is `sealed:v1:<key id>:<base64 of nonce, ciphertext and
/// tag>`, the key id being the first 8 hex digits of the key's SHA-256. A
/// value that is a JSON object was stored before sealing (or without a
/// key) and is read as it is. Nothing here ever puts a key or an attribute
/// in an error.
public final class CredentialSealer: Sendable {
    public struct Problem: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    private struct Key: Sendable {
        var id: String
        /// The key's bytes (SymmetricKey is not Sendable).
        var bytes: [UInt8]
        var key: SymmetricKey { SymmetricKey(data: bytes) }
    }

    /// The key file, or nil for keys given directly.
    public let keyFile: String?
    private let keys: NIOLockedValueBox<[Key]>

    static let prefix = "sealed:v1:"

    /// Reads the keys of `keyFile` (0600, this user's: ``SecretFile``).
    public convenience init(keyFile: String) throws(Problem) {
        self.init(keyFile: keyFile, keys: try Self.readKeys(keyFile))
    }

    /// Keys given directly (each 32 bytes); the first seals.
    public convenience init(keys: [[UInt8]]) throws(Problem) {
        guard !keys.isEmpty else { throw Problem("no credential key") }
        var made: [Key] = []
        for (index, bytes) in keys.enumerated() {
            guard bytes.count == 32 else { throw Problem("credential key \(index + 1) is \(bytes.count) bytes, not 32") }
            made.append(Self.key(bytes))
        }
        self.init(keyFile: nil, keys: made)
    }

    private init(keyFile: String?, keys: [Key]) {
        self.keyFile = keyFile
        self.keys = NIOLockedValueBox(keys)
    }

    /// Reads the key file again (a reload after a rotation step); on a
    /// problem the keys stay what they were.
    public func reload() throws(Problem) {
        guard let keyFile else { return }
        let fresh = try Self.readKeys(keyFile)
        keys.withLockedValue { $0 = fresh }
    }

    /// The id of the key that seals now.
    public var currentKeyID: String { keys.withLockedValue { $0[0].id } }

    /// A new key, as a key file line.
    public static func newKeyLine() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
    }

    public func seal(_ attributes: [String: String], credential label: String) throws(Problem) -> String {
        let key = keys.withLockedValue { $0[0] }
        let plain: Data
        do {
            plain = try JSONSerialization.data(withJSONObject: attributes, options: [.sortedKeys])
        } catch {
            throw Problem("cannot encode the attributes of credential \(label)")
        }
        do {
            let box = try AES.GCM.seal(plain, using: key.key, authenticating: Data(label.utf8))
            guard let combined = box.combined else { throw Problem("cannot seal credential \(label)") }
            return Self.prefix + key.id + ":" + combined.base64EncodedString()
        } catch let problem as Problem {
            throw problem
        } catch {
            throw Problem("cannot seal credential \(label): \(error)")
        }
    }

    /// Whether `stored` is sealed with the current key (nothing to reseal).
    public func isCurrent(_ stored: String) -> Bool {
        stored.hasPrefix(Self.prefix + currentKeyID + ":")
    }

    /// The attributes of a stored value: sealed (by any key of the file) or
    /// a plain JSON object.
    public func open(_ stored: String, credential label: String) throws(Problem) -> [String: String] {
        guard stored.hasPrefix(Self.prefix) else { return try Self.plain(stored, credential: label) }
        let rest = stored.dropFirst(Self.prefix.count)
        guard let colon = rest.firstIndex(of: ":") else { throw Problem("credential \(label) is sealed in an unknown form") }
        let id = String(rest[..<colon])
        guard let key = keys.withLockedValue({ $0.first { $0.id == id } }) else {
            throw Problem("credential \(label) is sealed with key \(id), which the key file \(keyFile ?? "") does not hold")
        }
        guard let combined = Data(base64Encoded: String(rest[rest.index(after: colon)...])) else {
            throw Problem("credential \(label) is sealed in an unknown form")
        }
        let plain: Data
        do {
            plain = try AES.GCM.open(AES.GCM.SealedBox(combined: combined), using: key.key, authenticating: Data(label.utf8))
        } catch {
            throw Problem("credential \(label) does not open with key \(id): it was altered or sealed for another credential")
        }
        return try Self.plain(String(decoding: plain, as: UTF8.self), credential: label)
    }

    /// Opens a stored value without a sealer: plain JSON only.
    public static func openPlain(_ stored: String, credential label: String) throws(Problem) -> [String: String] {
        if stored.hasPrefix(prefix) {
            throw Problem("credential \(label) is sealed and no credential_key_file is configured")
        }
        return try plain(stored, credential: label)
    }

    /// The JSON form of unsealed attributes.
    public static func plainText(_ attributes: [String: String], credential label: String) throws(Problem) -> String {
        do {
            return String(decoding: try JSONSerialization.data(withJSONObject: attributes, options: [.sortedKeys]), as: UTF8.self)
        } catch {
            throw Problem("cannot encode the attributes of credential \(label)")
        }
    }

    private static func plain(_ text: String, credential label: String) throws(Problem) -> [String: String] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String] else {
            throw Problem("credential \(label) has attributes that are not a JSON object of strings")
        }
        return object
    }

    private static func key(_ bytes: [UInt8]) -> Key {
        let digest = SHA256.hash(data: bytes)
        let id = digest.prefix(4).map { String(format: "%02x", $0) }.joined()
        return Key(id: id, bytes: bytes)
    }

    private static func readKeys(_ path: String) throws(Problem) -> [Key] {
        let content: [UInt8]
        do {
            content = try SecretFile.contents(of: path, regularFileOnly: true)
        } catch {
            throw Problem("credential key file: \(error)")
        }
        var keys: [Key] = []
        for (number, line) in String(decoding: content, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty || text.hasPrefix("#") { continue }
            guard let bytes = Data(base64Encoded: text), bytes.count == 32 else {
                throw Problem("credential key file \(path) line \(number + 1): not base64 of 32 bytes")
            }
            keys.append(key(Array(bytes)))
        }
        guard !keys.isEmpty else { throw Problem("credential key file \(path) holds no key") }
        return keys
    }
}
