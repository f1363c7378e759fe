public import Core

/// Where a machine stands in the poll schedule (SPEC §6.2). Persisted, so a
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

/// The machine store the poll engine needs (SPEC §6.1). SQLite through GRDB
/// is the embedded default (`SQLiteMachineStore`); the protocol leaves room
/// for a shared PostgreSQL store.
///
/// Every change appends to the events log in the same transaction. Methods
/// throw `StoreError` with a message naming what was wrong.
public protocol MachineStore: Sendable {
    // Machines: changes from outside the poller (source .external).
    func addMachine(_ machine: Machine) async throws
    /// Adds many machines in one transaction: all or none.
    func addMachines(_ machines: [Machine]) async throws
    /// Updates life, instance id, agent status, provider, credential or the
    /// manual flag; the polled truth is the poller's to write. An agent
    /// status that becomes `started` records an agent start.
    func updateMachine(_ machine: Machine) async throws
    /// A report from whoever runs the machine's agent: sets its agent status
    /// (clearing the agent message); every `started` records an agent start
    /// time, also when the status already was `started` (the agent
    /// restarted). Returns the machine as stored.
    @discardableResult
    func reportAgentStatus(machineID: String, _ status: Machine.AgentStatus) async throws -> Machine
    func removeMachine(id: String) async throws
    func machine(id: String) async throws -> Machine?
    func machines() async throws -> [Machine]

    // A fleet at a time.
    /// Up to `limit` machines with ids after `id` that pass `filter`, in id
    /// order, each with its schedule entry: one page of a listing.
    func machines(after id: String, limit: Int, filter: MachineFilter) async throws -> [ListedMachine]
    /// The same page's ids only.
    func machineIDs(after id: String, limit: Int, filter: MachineFilter) async throws -> [String]
    /// Which of `ids` are machines in the store.
    func existingMachineIDs(_ ids: [String]) async throws -> Set<String>
    /// Counts over the whole fleet, without reading it into memory.
    func summary(now: Timestamp) async throws -> FleetSummary
    /// Adds machines in one transaction, each logged as added; with
    /// `update`, one whose id exists is updated as ``updateMachine(_:)``
    /// would (its life and polled truth stay), else it fails the whole
    /// transaction.
    @discardableResult
    func importMachines(_ machines: [Machine], update: Bool) async throws -> ImportCounts
    /// Removes machines in one transaction (each logged as removed): all,
    /// or none when one does not exist.
    func removeMachines(ids: [String]) async throws

    /// Writes one batch's results and schedule in one transaction. Status,
    /// interfaces, the poll error and the agent's error are written only
    /// when they differ from what is stored; each change is logged as an
    /// event of source .poller carrying the old and new values (an
    /// instance status also goes into the machine's status history).
    /// Results for machines that no longer exist are skipped. Returns the
    /// events it logged.
    @discardableResult
    func applyPoll(_ results: [PollResult], schedule: [ScheduleEntry]) async throws -> [MachineEvent]

    /// Sets the manual machine's status (the poller's own write).
    func setInstanceStatus(machineID: String, _ status: InstanceStatusRecord) async throws

    /// The machine's last instance statuses as written, newest first (at
    /// most ``statusHistoryLimit``).
    func statusHistory(machineID: String) async throws -> [InstanceStatusRecord]

    // Schedule state.
    func schedule() async throws -> [ScheduleEntry]
    func saveSchedule(_ entries: [ScheduleEntry], removing: [String]) async throws

    // The events log.
    func events(after revision: Int64, limit: Int) async throws -> [MachineEvent]
    /// The changes from outside the poller (source .external) after
    /// `revision`, at most `limit`, and the revision up to which the log
    /// was read: the poller follows the log through this without reading
    /// back its own writes.
    func externalEvents(after revision: Int64, limit: Int) async throws -> ExternalEvents
    func latestRevision() async throws -> Int64

    // Credentials.
    func credential(provider: String, name: String) async throws -> StoredCredential?
    func credentials() async throws -> [StoredCredential]
    /// Sets (adds or replaces) a credential and clears its invalid mark
    /// (source .external, kind .credentialSet).
    func setCredential(_ credential: StoredCredential) async throws
    /// Marks a credential invalid with the reason (source .poller, kind
    /// .credentialInvalidated).
    func invalidateCredential(provider: String, name: String, reason: String) async throws
    /// Clears a credential's invalid mark: it was found valid again (kind
    /// .credentialValidated, from `source`). Returns false, writing
    /// nothing, when it was not marked; throws when it does not exist.
    @discardableResult
    func clearCredentialInvalid(provider: String, name: String, source: MachineEvent.Source) async throws -> Bool
    /// Removes a credential (source .external, kind .credentialRemoved);
    /// machines that name it stay. Throws when it does not exist.
    func removeCredential(provider: String, name: String) async throws
    /// The credentials `provider`'s machines name, each with how many
    /// machines name it (stored or not).
    func credentialUse(provider: String) async throws -> [String: Int]
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

/// How many instance statuses a machine's history keeps.
public let statusHistoryLimit = 20

/// A store operation that failed; the message says what and where.
public struct StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
