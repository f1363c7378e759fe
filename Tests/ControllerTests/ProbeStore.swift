@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import NIOConcurrencyHelpers

/// The real SQLite store with a probe in front: it counts each operation,
/// and fails the next writes of a kind when a test says so (a busy
/// database, a full disk), writing nothing.
final class ProbeStore: MachineStore, Sendable {
    enum Operation: String, Hashable, Sendable {
        case events, machine, machines, applyPoll, saveSchedule, schedule, credential, invalidateCredential, clearCredentialInvalid, setInstanceStatus
    }

    let inner: SQLiteMachineStore
    private let counts = NIOLockedValueBox<[Operation: Int]>([:])
    private let countWaiters = NIOLockedValueBox<[(operation: Operation, count: Int, continuation: CheckedContinuation<Void, Never>)]>([])
    private let failures = NIOLockedValueBox<[Operation: Int]>([:])
    /// Holds writes (applyPoll) before they begin when a test says so.
    let writes = CallGate()
    private let writesInFlight = NIOLockedValueBox<(now: Int, most: Int)>((0, 0))

    /// The most applyPoll calls that were in flight at once.
    var maxWritesInFlight: Int { writesInFlight.withLockedValue { $0.most } }

    init(_ inner: SQLiteMachineStore) { self.inner = inner }

    func count(_ operation: Operation) -> Int { counts.withLockedValue { $0[operation, default: 0] } }

    /// Returns once `operation` has been called `count` times in all (and
    /// has returned, for the writes).
    func waitUntil(_ operation: Operation, count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = counts.withLockedValue { counts -> Bool in
                if counts[operation, default: 0] >= count { return true }
                countWaiters.withLockedValue { $0.append((operation, count, continuation)) }
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Counts a call that has ended, waking whoever waits for that count.
    private func done(_ operation: Operation) {
        let ready = counts.withLockedValue { counts -> [CheckedContinuation<Void, Never>] in
            counts[operation, default: 0] += 1
            let reached = counts[operation, default: 0]
            return countWaiters.withLockedValue { waiters in
                let ready = waiters.filter { $0.operation == operation && $0.count <= reached }.map(\.continuation)
                waiters.removeAll { $0.operation == operation && $0.count <= reached }
                return ready
            }
        }
        for waiter in ready { waiter.resume() }
    }

    /// The next `times` calls of `operation` throw a StoreError.
    func fail(_ operation: Operation, times: Int = 1) { failures.withLockedValue { $0[operation] = times } }

    /// Runs one operation: it fails if the test said so, and is counted
    /// once it has ended (failed or not).
    private func probe<T>(_ operation: Operation, _ body: () async throws -> T) async throws -> T {
        defer { done(operation) }
        let fails = failures.withLockedValue { failures in
            guard let left = failures[operation], left > 0 else { return false }
            failures[operation] = left - 1
            return true
        }
        if fails { throw StoreError(.unavailable, "\(operation.rawValue) in probe.db: database is locked (injected)") }
        return try await body()
    }

    func addMachine(_ machine: Machine) async throws { try await inner.addMachine(machine) }
    func addMachines(_ machines: [Machine]) async throws { try await inner.addMachines(machines) }
    func updateMachine(_ machine: Machine) async throws { try await inner.updateMachine(machine) }
    @discardableResult
    func reportAgentStatus(machineID: String, _ status: Machine.AgentStatus) async throws -> Machine {
        try await inner.reportAgentStatus(machineID: machineID, status)
    }
    func removeMachine(id: String) async throws { try await inner.removeMachine(id: id) }

    func machine(id: String) async throws -> Machine? {
        try await probe(.machine) { try await inner.machine(id: id) }
    }

    func machines(after id: String, limit: Int, filter: MachineFilter) async throws -> [ListedMachine] {
        try await inner.machines(after: id, limit: limit, filter: filter)
    }
    func machineIDs(after id: String, limit: Int, filter: MachineFilter) async throws -> [String] {
        try await inner.machineIDs(after: id, limit: limit, filter: filter)
    }
    func existingMachineIDs(_ ids: [String]) async throws -> Set<String> { try await inner.existingMachineIDs(ids) }
    func summary(now: Timestamp) async throws -> FleetSummary { try await inner.summary(now: now) }
    func importMachines(_ machines: [Machine], update: Bool) async throws -> ImportCounts { try await inner.importMachines(machines, update: update) }
    func removeMachines(ids: [String]) async throws { try await inner.removeMachines(ids: ids) }

    func machines() async throws -> [Machine] {
        try await probe(.machines) { try await inner.machines() }
    }

    func machines(of key: CredentialKey) async throws -> [Machine] {
        try await probe(.machines) { try await inner.machines(of: key) }
    }

    func workPairs() async throws -> [CredentialKey] { try await inner.workPairs() }

    @discardableResult
    func applyPoll(_ results: [PollResult], schedule: [ScheduleEntry], fence: LeaseFence?) async throws -> [MachineEvent] {
        try await probe(.applyPoll) {
            writesInFlight.withLockedValue { $0 = ($0.now + 1, max($0.most, $0.now + 1)) }
            defer { writesInFlight.withLockedValue { $0.now -= 1 } }
            await writes.pass()
            return try await inner.applyPoll(results, schedule: schedule, fence: fence)
        }
    }

    func setInstanceStatus(machineID: String, _ status: InstanceStatusRecord) async throws {
        try await probe(.setInstanceStatus) { try await inner.setInstanceStatus(machineID: machineID, status) }
    }

    func statusHistory(machineID: String) async throws -> [InstanceStatusRecord] { try await inner.statusHistory(machineID: machineID) }

    func schedule() async throws -> [ScheduleEntry] {
        try await probe(.schedule) { try await inner.schedule() }
    }

    func schedule(of key: CredentialKey) async throws -> [ScheduleEntry] {
        try await probe(.schedule) { try await inner.schedule(of: key) }
    }

    func saveSchedule(_ entries: [ScheduleEntry], removing: [String]) async throws {
        try await probe(.saveSchedule) { try await inner.saveSchedule(entries, removing: removing) }
    }

    func events(after revision: Int64, limit: Int) async throws -> [MachineEvent] {
        try await probe(.events) { try await inner.events(after: revision, limit: limit) }
    }

    func externalEvents(after revision: Int64, limit: Int) async throws -> ExternalEvents {
        try await probe(.events) { try await inner.externalEvents(after: revision, limit: limit) }
    }

    func latestRevision() async throws -> Int64 { try await inner.latestRevision() }

    func pruneEvents(before: Timestamp?, keepingLast: Int64?) async throws -> Int {
        try await inner.pruneEvents(before: before, keepingLast: keepingLast)
    }

    func resealCredentials() async throws -> Int { try await inner.resealCredentials() }

    func credential(provider: String, name: String) async throws -> StoredCredential? {
        try await probe(.credential) { try await inner.credential(provider: provider, name: name) }
    }

    func credentials() async throws -> [StoredCredential] { try await inner.credentials() }
    func setCredential(_ credential: StoredCredential) async throws { try await inner.setCredential(credential) }

    func invalidateCredential(provider: String, name: String, reason: String) async throws {
        try await probe(.invalidateCredential) { try await inner.invalidateCredential(provider: provider, name: name, reason: reason) }
    }

    @discardableResult
    func clearCredentialInvalid(provider: String, name: String, source: MachineEvent.Source) async throws -> Bool {
        try await probe(.clearCredentialInvalid) { try await inner.clearCredentialInvalid(provider: provider, name: name, source: source) }
    }

    func removeCredential(provider: String, name: String) async throws { try await inner.removeCredential(provider: provider, name: name) }
    func credentialUse(provider: String) async throws -> [String: Int] { try await inner.credentialUse(provider: provider) }
}
