/// A machine record: who runs it and where, and the cloud's truth about it
/// as last polled (SPEC §6.1).
public struct Machine: Hashable, Sendable {
    public enum Life: String, Hashable, Sendable, CaseIterable {
        case alive, dying, dead
    }

    /// The machine's agent, as whoever runs it reports. `none` means an
    /// agentless machine, which counts as started for scheduling.
    public enum AgentStatus: String, Hashable, Sendable, CaseIterable {
        case none, pending, started, error, down
    }

    public var id: String
    /// The configured provider (shim) that serves this machine's cloud.
    public var provider: String
    /// The name of the credential used for this machine's cloud calls.
    public var credential: String
    /// The cloud's instance id; empty while not provisioned.
    public var instanceID: String
    public var life: Life
    /// Manually provisioned: never polled.
    public var manual: Bool
    public var agentStatus: AgentStatus

    // The polled truth.
    public var instanceStatus: InstanceStatusRecord
    public var interfaces: [ProviderV1.NetworkInterface]
    /// Why the last poll of this machine failed, if it did (e.g.
    /// "credential invalid: …"); nil after a good poll.
    public var pollError: String?

    public init(
        id: String,
        provider: String,
        credential: String,
        instanceID: String = "",
        life: Life = .alive,
        manual: Bool = false,
        agentStatus: AgentStatus = .none,
        instanceStatus: InstanceStatusRecord = InstanceStatusRecord(),
        interfaces: [ProviderV1.NetworkInterface] = [],
        pollError: String? = nil
    ) {
        self.id = id
        self.provider = provider
        self.credential = credential
        self.instanceID = instanceID
        self.life = life
        self.manual = manual
        self.agentStatus = agentStatus
        self.instanceStatus = instanceStatus
        self.interfaces = interfaces
        self.pollError = pollError
    }

    public var isProvisioned: Bool { !instanceID.isEmpty }

    /// Every address of every interface, shadow addresses included.
    public var addresses: [ProviderV1.Address] {
        interfaces.flatMap { $0.addresses + $0.shadowAddresses }
    }
}

/// The instance status as the cloud last reported it.
public struct InstanceStatusRecord: Hashable, Sendable {
    public var state: ProviderV1.InstanceState
    public var rawStatus: String
    public var message: String
    /// When it was last written (not when last polled).
    public var updatedAt: Timestamp?

    public init(state: ProviderV1.InstanceState = .unspecified, rawStatus: String = "", message: String = "", updatedAt: Timestamp? = nil) {
        self.state = state
        self.rawStatus = rawStatus
        self.message = message
        self.updatedAt = updatedAt
    }

    /// Same state, raw status and message (the time aside).
    public func sameReport(as other: InstanceStatusRecord) -> Bool {
        state == other.state && rawStatus == other.rawStatus && message == other.message
    }
}
