/// A (provider, credential name) pair: the unit of batching, gating,
/// throttling and scheduling, and how the engine, the gate, the supervisor
/// and the credential API name a credential. ``description`` is the
/// "provider/name" form, for logs and messages only.
public struct CredentialKey: Hashable, Sendable, CustomStringConvertible {
    public var provider: String
    public var name: String

    public init(provider: String, name: String) {
        self.provider = provider
        self.name = name
    }

    /// The key of a credential event's "provider/name" label (the events
    /// log's form); nil when it is not one.
    public init?(label: String) {
        let parts = label.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        self.init(provider: parts[0], name: parts[1])
    }

    public var description: String { "\(provider)/\(name)" }
}

extension StoredCredential {
    public var key: CredentialKey { CredentialKey(provider: provider, name: name) }
}

extension Machine {
    /// The pair the machine is polled in.
    public var credentialKey: CredentialKey { CredentialKey(provider: provider, name: credential) }
}
