internal import Core
internal import SwiftProtobuf

/// How values are kept in a store's columns, the same in SQLite and
/// PostgreSQL (docs/DESIGN.md §6.1, §6.7), and how events show them.
enum StoredValues {
    /// Interfaces are kept as one `InstanceInterfaces` message (only its
    /// `interfaces` field set): plain protobuf that any tool can decode.
    /// Nil for none.
    static func encode(interfaces: [ProviderV1.NetworkInterface], machineID: String) throws -> [UInt8]? {
        guard !interfaces.isEmpty else { return nil }
        do {
            let bytes: [UInt8] = try ProviderV1.InstanceInterfaces.with { $0.interfaces = interfaces }.serializedBytes()
            return bytes
        } catch {
            throw StoreError(.internal, "cannot encode the interfaces of machine \(machineID): \(error)")
        }
    }

    static func interfaces<Bytes: SwiftProtobufContiguousBytes>(_ bytes: Bytes?, machineID: String) throws -> [ProviderV1.NetworkInterface] {
        guard let bytes, bytes.count > 0 else { return [] }
        do {
            return try ProviderV1.InstanceInterfaces(serializedBytes: bytes).interfaces
        } catch {
            throw StoreError(.internal, "machine \(machineID) has unreadable interfaces: \(error)")
        }
    }

    /// Every address of the interfaces, comma-separated, as events show them.
    static func addressList(_ interfaces: [ProviderV1.NetworkInterface]) -> String {
        interfaces.flatMap { $0.addresses + $0.shadowAddresses }.map(\.value).joined(separator: ",")
    }

    /// An agent status with its message, as events show it.
    static func agentText(_ status: String, _ message: String) -> String {
        message.isEmpty ? status : "\(status): \(message)"
    }

    /// The attributes column's value: sealed with a sealer, JSON without.
    static func stored(_ attributes: [String: String], credential label: String, sealer: CredentialSealer?) throws -> String {
        do {
            if let sealer { return try sealer.seal(attributes, credential: label) }
            return try CredentialSealer.plainText(attributes, credential: label)
        } catch {
            throw StoreError(.internal, error.description)
        }
    }

    /// The attributes a column's value holds. Its errors never quote it: it
    /// may be the secrets.
    static func attributes(_ text: String, credential label: String, sealer: CredentialSealer?) throws -> [String: String] {
        do {
            if let sealer { return try sealer.open(text, credential: label) }
            return try CredentialSealer.openPlain(text, credential: label)
        } catch {
            throw StoreError(.failedPrecondition, error.description)
        }
    }
}
