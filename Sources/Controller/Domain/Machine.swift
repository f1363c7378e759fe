public import Core

/// A machine record: who runs it and where, and the cloud's truth about it
/// as last polled (docs/DESIGN.md §6.1).
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
    /// Said with the agent status, e.g. the provider's message when the
    /// poller set it to error for a provisioning error.
    public var agentMessage: String
    /// When the agent last reported `started` (every report counts: an
    /// agent that restarts reports it again). Juju's poller watches this,
    /// not the agent status: a start moves the machine to the short group.
    public var agentStartedAt: Timestamp?

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
        agentMessage: String = "",
        agentStartedAt: Timestamp? = nil,
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
        self.agentMessage = agentMessage
        self.agentStartedAt = agentStartedAt
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

    /// What the poller records for an instance the provider does not find
    /// (the poller writes it once): state unknown, raw status `not-found`.
    public static func notFound(at time: Timestamp?) -> InstanceStatusRecord {
        InstanceStatusRecord(state: .unknown, rawStatus: notFoundRawStatus, message: "instance not found by the provider", updatedAt: time)
    }

    public static let notFoundRawStatus = "not-found"

    /// Whether this is the record of an instance the provider did not find.
    public var isNotFound: Bool { state == .unknown && rawStatus == Self.notFoundRawStatus }
}

extension ProviderV1.InstanceState {
    /// "running", "provisioning-error", … as configs, scenarios and the CLI
    /// spell the states.
    public var label: String {
        switch self {
        case .allocating: "allocating"
        case .provisioning: "provisioning"
        case .running: "running"
        case .provisioningError: "provisioning-error"
        case .stopped: "stopped"
        case .terminated: "terminated"
        case .unknown: "unknown"
        default: "unspecified"
        }
    }
}

extension InstanceStatusRecord {
    /// One line for logs and events: the state, the raw status when it says
    /// something else, and the message, e.g.
    /// `unknown (not-found): instance not found by the provider`.
    public var summary: String {
        var text = state.label
        if !rawStatus.isEmpty, rawStatus != text { text += " (\(rawStatus))" }
        if !message.isEmpty { text += ": \(message)" }
        return text
    }
}
