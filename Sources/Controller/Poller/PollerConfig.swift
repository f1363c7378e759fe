internal import Core
public import Logging

/// Everything the poller needs, checked by ``validate()`` which names the
/// missing piece (the way Juju's worker configs do).
public struct PollerConfig: Sendable {
    public var clock: (any PollClock)?
    public var store: (any MachineStore)?
    /// The provider client ("environ"), per provider name.
    public var providers: (any ProviderRouter)?
    /// The credential API: where credentials are read and invalidated.
    public var credentials: (any CredentialAPI)?
    public var logger: Logger?
    public var settings: PollSettings
    /// Providers polled with settings of their own (a provider's `poll:`
    /// block), by provider name; the rest use ``settings``.
    public var providerSettings: [String: PollSettings]
    /// How often the events log is read for changes from other processes
    /// (this process's own changes wake the poller at once through
    /// ``Poller/storeChanged()``).
    public var watchInterval: Duration
    /// Seed of the long-group jitter.
    public var jitterSeed: UInt64
    /// Where polls, calls, batch sizes, groups and credential validity are
    /// counted (nil: not counted).
    public var metrics: ControllerMetrics?
    /// With several controllers on one store: the pairs this one holds
    /// leases on, the only ones it polls (nil: every pair is its own).
    public var ownership: PairOwnership?

    public init(
        clock: (any PollClock)? = nil,
        store: (any MachineStore)? = nil,
        providers: (any ProviderRouter)? = nil,
        credentials: (any CredentialAPI)? = nil,
        logger: Logger? = nil,
        settings: PollSettings = PollSettings(),
        providerSettings: [String: PollSettings] = [:],
        watchInterval: Duration = .seconds(1),
        jitterSeed: UInt64 = UInt64.random(in: 0...UInt64.max),
        metrics: ControllerMetrics? = nil,
        ownership: PairOwnership? = nil
    ) {
        self.metrics = metrics
        self.ownership = ownership
        self.clock = clock
        self.store = store
        self.providers = providers
        self.credentials = credentials
        self.logger = logger
        self.settings = settings
        self.providerSettings = providerSettings
        self.watchInterval = watchInterval
        self.jitterSeed = jitterSeed
    }

    public struct Invalid: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Throws ``Invalid`` naming the first missing or bad piece.
    public func validate() throws(Invalid) {
        if clock == nil { throw Invalid(description: "poller config: missing clock") }
        if store == nil { throw Invalid(description: "poller config: missing machine store") }
        if providers == nil { throw Invalid(description: "poller config: missing provider client") }
        if credentials == nil { throw Invalid(description: "poller config: missing credential API") }
        if logger == nil { throw Invalid(description: "poller config: missing logger") }
        if let problem = settings.problem() { throw Invalid(description: "poller config: \(problem)") }
        for (provider, settings) in providerSettings.sorted(by: { $0.key < $1.key }) {
            if let problem = settings.problem() { throw Invalid(description: "poller config: provider \(provider): \(problem)") }
        }
        if watchInterval <= .zero { throw Invalid(description: "poller config: watch interval must be positive") }
    }
}

/// Reading and invalidating credentials (Juju's credential API).
public protocol CredentialAPI: Sendable {
    func credential(_ key: CredentialKey) async throws -> StoredCredential?
    func invalidate(_ key: CredentialKey, reason: String) async throws
    /// The credentials of `provider` that its machines use (a swap
    /// validates only these: one nobody uses cannot block it).
    func credentialsInUse(provider: String) async throws -> [StoredCredential]
    /// Clears the invalid mark of a credential found valid again; false
    /// when it was not marked.
    @discardableResult
    func clearInvalid(_ key: CredentialKey) async throws -> Bool
}

/// The credential API on the machine store.
public struct StoreCredentialAPI: CredentialAPI {
    public let store: any MachineStore
    public init(store: any MachineStore) { self.store = store }

    public func credential(_ key: CredentialKey) async throws -> StoredCredential? {
        try await store.credential(provider: key.provider, name: key.name)
    }

    public func invalidate(_ key: CredentialKey, reason: String) async throws {
        try await store.invalidateCredential(provider: key.provider, name: key.name, reason: reason)
    }

    public func credentialsInUse(provider: String) async throws -> [StoredCredential] {
        let used = try await store.credentialUse(provider: provider)
        return try await store.credentials().filter { $0.provider == provider && used[$0.name, default: 0] > 0 }
    }

    @discardableResult
    public func clearInvalid(_ key: CredentialKey) async throws -> Bool {
        try await store.clearCredentialInvalid(provider: key.provider, name: key.name, source: .poller)
    }
}
