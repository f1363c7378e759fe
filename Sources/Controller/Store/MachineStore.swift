/// The machine store the poll engine needs (docs/DESIGN.md §6.1). SQLite through GRDB
/// is the embedded default (`SQLiteMachineStore`); PostgreSQL
/// (`PostgresMachineStore`) is the store several controllers share, which
/// is also a ``LeaseStore``.
///
/// Every change appends to the events log in the same transaction. Methods
/// throw `StoreError`: its message names what was wrong, and its kind what
/// that means (``StoreError/noMachine(_:)`` and
/// ``StoreError/noCredential(provider:name:)`` for what is not there,
/// ``StoreError/machineExists(_:)`` for a taken id, unavailable for a
/// database that is busy or failing, …). Every store raises the same kinds
/// for the same failures: the control API's codes come from them.
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
    /// The machines of one (provider, credential) pair, in id order: what
    /// a controller that holds the pair's lease polls.
    func machines(of key: CredentialKey) async throws -> [Machine]
    /// The pairs that machines name (alive or dying, manual or not, with
    /// or without an instance id yet): the units of work leases share out.
    /// A manual machine's pair is held too: its holder marks it running.
    func workPairs() async throws -> [CredentialKey]

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
    ///
    /// With a `fence`, the transaction first checks that the fence's holder
    /// still holds the pair's lease at the fence's epoch, locking the lease
    /// row until commit, and writes nothing when it does not
    /// (``StoreError/Kind/leaseLost``). A store without leases takes nil.
    @discardableResult
    func applyPoll(_ results: [PollResult], schedule: [ScheduleEntry], fence: LeaseFence?) async throws -> [MachineEvent]

    /// Sets the manual machine's status (the poller's own write).
    func setInstanceStatus(machineID: String, _ status: InstanceStatusRecord) async throws

    /// The machine's last instance statuses as written, newest first (at
    /// most ``statusHistoryLimit``).
    func statusHistory(machineID: String) async throws -> [InstanceStatusRecord]

    // Schedule state.
    func schedule() async throws -> [ScheduleEntry]
    /// The schedule entries of one pair's machines.
    func schedule(of key: CredentialKey) async throws -> [ScheduleEntry]
    func saveSchedule(_ entries: [ScheduleEntry], removing: [String]) async throws

    // The events log.
    func events(after revision: Int64, limit: Int) async throws -> [MachineEvent]
    /// The changes from outside the poller (source .external) after
    /// `revision`, at most `limit`, and the revision up to which the log
    /// was read: the poller follows the log through this without reading
    /// back its own writes.
    func externalEvents(after revision: Int64, limit: Int) async throws -> ExternalEvents
    func latestRevision() async throws -> Int64
    /// Retention: removes events older than `before` and all but the newest
    /// `keepingLast`, either being nil for no such bound. The latest
    /// revision stays what it was (revisions are never reused). Returns how
    /// many were removed.
    @discardableResult
    func pruneEvents(before: Timestamp?, keepingLast: Int64?) async throws -> Int

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
    /// Seals every credential again with the sealer's current key (after a
    /// key rotation; plain rows of an older store get sealed too). Returns
    /// how many were rewritten; throws ``StoreError/Kind/failedPrecondition``
    /// without a sealer.
    @discardableResult
    func resealCredentials() async throws -> Int
}

extension MachineStore {
    /// A batch's results without a lease to check (one controller).
    @discardableResult
    public func applyPoll(_ results: [PollResult], schedule: [ScheduleEntry]) async throws -> [MachineEvent] {
        try await applyPoll(results, schedule: schedule, fence: nil)
    }
}

/// How many instance statuses a machine's history keeps.
public let statusHistoryLimit = 20
