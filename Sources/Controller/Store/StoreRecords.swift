public import Core

// The values the machine store keeps and answers with.

/// Where a machine stands in the poll schedule (docs/DESIGN.md §6.2.2). Persisted, so a
/// restarted controller resumes instead of polling everything at 3 s.
public struct ScheduleEntry: Hashable, Sendable {
    public enum Group: String, Hashable, Sendable {
        /// Polled at a backing-off interval: 3, 6, 12 … 60 s.
        case short
        /// Polled every long-poll interval (15 min) ± jitter.
        case long
    }

    public var machineID: String
    public var group: Group
    public var interval: Duration
    public var due: Timestamp

    public init(machineID: String, group: Group, interval: Duration, due: Timestamp) {
        self.machineID = machineID
        self.group = group
        self.interval = interval
        self.due = due
    }
}

/// A cloud credential. Its attributes are secrets: `description` never
/// shows them, and nothing may log them.
public struct StoredCredential: Hashable, Sendable, CustomStringConvertible {
    public var provider: String
    public var name: String
    public var authType: String
    public var attributes: [String: String]
    public var expiresAt: Timestamp?
    /// Why it was marked invalid; nil while it is usable.
    public var invalidReason: String?

    public init(
        provider: String,
        name: String,
        authType: String,
        attributes: [String: String],
        expiresAt: Timestamp? = nil,
        invalidReason: String? = nil
    ) {
        self.provider = provider
        self.name = name
        self.authType = authType
        self.attributes = attributes
        self.expiresAt = expiresAt
        self.invalidReason = invalidReason
    }

    public var description: String {
        "credential \(provider)/\(name) (\(authType), attributes: \(attributes.keys.sorted().joined(separator: ", ")))"
    }
}

/// One entry of the append-only events log.
public struct MachineEvent: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable {
        case machineAdded = "machine-added"
        case machineChanged = "machine-changed"
        case machineRemoved = "machine-removed"
        /// The poller wrote polled truth that none of the kinds below covers:
        /// interfaces whose addresses stayed the same, or a poll error that
        /// appeared, changed or cleared (old and new values: the errors).
        case machinePolled = "machine-polled"
        /// The poller wrote a new instance status (values: the statuses'
        /// one-line summaries).
        case instanceStatusChanged = "instance-status-changed"
        /// The poller wrote interfaces with other addresses (values: the
        /// addresses, comma-separated).
        case addressesChanged = "addresses-changed"
        /// The poller set the agent status (to error, on a provisioning
        /// error; values: "status" or "status: message").
        case agentStatusChanged = "agent-status-changed"
        case credentialSet = "credential-set"
        case credentialInvalidated = "credential-invalidated"
        /// A credential marked invalid was found valid again (by the poll
        /// engine's re-check, source .poller, or `credentials validate`,
        /// source .external): its mark is cleared (old value: the reason).
        case credentialValidated = "credential-validated"
        /// A credential was removed (`credentials remove`); new value: how
        /// many machines still named it.
        case credentialRemoved = "credential-removed"
    }

    /// Who made the change. The poller's own writes must not wake it.
    public enum Source: String, Hashable, Sendable {
        case external, poller
    }

    /// Monotonically increasing across the log.
    public var revision: Int64
    public var kind: Kind
    public var source: Source
    /// The machine concerned; empty for credential events.
    public var machineID: String
    /// For credential events: "provider/name".
    public var credential: String
    public var at: Timestamp
    /// What changed, for the poller's changes: the value before and after
    /// (see each ``Kind``); empty otherwise.
    public var oldValue: String
    public var newValue: String

    public init(
        revision: Int64, kind: Kind, source: Source, machineID: String = "", credential: String = "", at: Timestamp,
        oldValue: String = "", newValue: String = ""
    ) {
        self.revision = revision
        self.kind = kind
        self.source = source
        self.machineID = machineID
        self.credential = credential
        self.at = at
        self.oldValue = oldValue
        self.newValue = newValue
    }
}

/// A machine's outcome from one poll, as the store writes it.
public struct PollResult: Hashable, Sendable {
    public var machineID: String
    /// New instance status, or nil to leave it as it is.
    public var instanceStatus: InstanceStatusRecord?
    /// New interfaces, or nil to leave them as they are.
    public var interfaces: [ProviderV1.NetworkInterface]?
    /// The poll error to record (nil clears it).
    public var pollError: String?
    /// The provider reported a provisioning error with this message: the
    /// agent status becomes error with it (nil: the agent is left alone).
    public var agentError: String?

    public init(
        machineID: String,
        instanceStatus: InstanceStatusRecord? = nil,
        interfaces: [ProviderV1.NetworkInterface]? = nil,
        pollError: String? = nil,
        agentError: String? = nil
    ) {
        self.machineID = machineID
        self.instanceStatus = instanceStatus
        self.interfaces = interfaces
        self.pollError = pollError
        self.agentError = agentError
    }
}

/// Changes from outside the poller, as ``MachineStore/externalEvents(after:limit:)`` reads them.
public struct ExternalEvents: Hashable, Sendable {
    public var events: [MachineEvent]
    /// The log was read up to here: the next read starts after it.
    public var through: Int64

    public init(events: [MachineEvent], through: Int64) {
        self.events = events
        self.through = through
    }
}

/// Which machines a listing holds: every condition that is set must hold.
public struct MachineFilter: Hashable, Sendable {
    public enum State: Hashable, Sendable {
        case state(ProviderV1.InstanceState)
        /// The provider does not know the instance (state unknown, raw
        /// status not-found).
        case notFound
    }

    public enum Group: Hashable, Sendable {
        case short, long
        /// Not in the schedule (e.g. manual).
        case untracked
    }

    /// Only the machine with this id.
    public var id: String?
    public var provider: String?
    public var credential: String?
    public var state: State?
    public var group: Group?
    public var agentStatus: Machine.AgentStatus?
    /// Only machines whose last poll failed.
    public var withError: Bool

    public init(
        id: String? = nil, provider: String? = nil, credential: String? = nil, state: State? = nil, group: Group? = nil,
        agentStatus: Machine.AgentStatus? = nil, withError: Bool = false
    ) {
        self.id = id
        self.provider = provider
        self.credential = credential
        self.state = state
        self.group = group
        self.agentStatus = agentStatus
        self.withError = withError
    }

    /// Every machine.
    public static let all = MachineFilter()
}

/// A machine of a listing and where it stands in the schedule.
public struct ListedMachine: Hashable, Sendable {
    public var machine: Machine
    /// nil when not tracked.
    public var schedule: ScheduleEntry?

    public init(machine: Machine, schedule: ScheduleEntry?) {
        self.machine = machine
        self.schedule = schedule
    }
}

/// Counts over the fleet, as `status` shows them.
public struct FleetSummary: Hashable, Sendable {
    public var machines = 0
    /// Per instance state (``ProviderV1/InstanceState/label``).
    public var byState: [String: Int] = [:]
    public var shortGroup = 0
    public var longGroup = 0
    /// Machines whose last poll failed.
    public var pollErrors = 0
    /// Tracked machines due more than one interval ago.
    public var overdue = 0
    /// Machines whose instance the provider does not know.
    public var notFound = 0

    public init() {}
}

/// What ``MachineStore/importMachines(_:update:)`` did.
public struct ImportCounts: Hashable, Sendable {
    public var added = 0
    public var updated = 0
    /// Already exactly so: nothing written.
    public var unchanged = 0

    public init(added: Int = 0, updated: Int = 0, unchanged: Int = 0) {
        self.added = added
        self.updated = updated
        self.unchanged = unchanged
    }
}
