import Core
import ControlAPI
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwiftProtobuf
import Testing
import TestSupport

@_spi(Testing) @testable import Controller

/// `Status` with controllers sharing the store (docs/DESIGN.md §8): every
/// live controller, the pairs each holds by the database's clock, this
/// controller marked; and how `instancepoller status` prints them.
@Suite struct StatusControllersTests {
    /// The database's clock, an hour behind the controller's: a lease read
    /// against the controller's clock would look expired.
    static let databaseNow = Timestamp(nanosecondsSinceEpoch: 1_700_000_000_000_000_000)
    let clock = ManualPollClock(start: StatusControllersTests.databaseNow + .seconds(3600))

    static func identity(_ holder: String, pid: Int32) -> ControllerIdentity {
        ControllerIdentity(holder: holder, host: "host-\(holder)", pid: pid, version: "1.2.\(pid)")
    }

    static func lease(_ provider: String, _ name: String, _ holder: String, expiresIn seconds: Int64) -> LeaseRecord {
        LeaseRecord(key: CredentialKey(provider: provider, name: name), holder: holder, epoch: 3, expiresAt: databaseNow + .seconds(seconds))
    }

    func status(store: any MachineStore, holder: String?) async throws -> Instancepoller_Control_V1_StatusResponse {
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let fleet = ProviderFleet(
            providers: [], runtimeDirectory: "/nonexistent", clock: clock, settings: SupervisionSettings(), credentials: nil, logger: logger)
        let service = ControlService(
            identity: .init(pid: 7, version: "test", startedAt: clock.now, storePath: "shared", runtimeDirectory: "/nonexistent", holder: holder),
            store: store, fleet: fleet, clock: clock, environment: [:], logger: logger)
        return try await callControl(service, ControlV1.status, .init())
    }

    @Test func statusListsTheLiveControllersAndThePairsEachHoldsByTheDatabaseClock() async throws {
        let store = try FakeLeaseStore(clock: clock, databaseNow: Self.databaseNow)
        store.renewed(Self.identity("ctl-b", pid: 20), ago: .seconds(2))
        store.renewed(Self.identity("ctl-a", pid: 10), ago: .zero)
        store.leases = [
            Self.lease("aws", "ops", "ctl-a", expiresIn: 8),
            Self.lease("aws", "main", "ctl-a", expiresIn: 1),
            Self.lease("gce", "main", "ctl-b", expiresIn: 5),
            // Expired (database clock): held by nobody, whatever its holder says.
            Self.lease("gce", "old", "ctl-b", expiresIn: -1),
            // Its controller is gone; the lease has not expired yet.
            Self.lease("azure", "main", "ctl-gone", expiresIn: 4),
        ]
        let status = try await status(store: store, holder: "ctl-a")
        #expect(status.holder == "ctl-a")
        #expect(status.controllers.map(\.holder) == ["ctl-a", "ctl-b"])
        let a = status.controllers[0]
        #expect(a.host == "host-ctl-a" && a.pid == 10 && a.version == "1.2.10")
        #expect(a.lastRenewalUnixNano == Self.databaseNow.nanosecondsSinceEpoch)
        #expect(a.expiresUnixNano == (Self.databaseNow + .seconds(10)).nanosecondsSinceEpoch)
        #expect(a.pairs == ["aws/main", "aws/ops"], "sorted")
        #expect(status.controllers[1].pairs == ["gce/main"])
        #expect(status.controllers[1].lastRenewalUnixNano == (Self.databaseNow + .seconds(-2)).nanosecondsSinceEpoch)
    }

    @Test func aStoreWithoutLeasesHasNoControllersAndNoHolder() async throws {
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let sqlite = try SQLiteMachineStore.inMemory(clock: clock, logger: logger)
        let status = try await status(store: sqlite, holder: nil)
        #expect(status.controllers.isEmpty)
        #expect(status.holder.isEmpty)
        // A shared store with no controller alive yet lists none either.
        let empty = try await self.status(store: try FakeLeaseStore(clock: clock, databaseNow: Self.databaseNow), holder: "ctl-a")
        #expect(empty.controllers.isEmpty)
        #expect(empty.holder == "ctl-a")
    }

    /// `instancepoller status`: one row per controller — `*` for the one
    /// that answered, holder, host, pid, its last renewal as an age, and
    /// the pairs it holds; JSON carries the same fields.
    @Test func theCLIPrintsARowPerControllerAndThisOneIsMarked() throws {
        let now = Timestamp(nanosecondsSinceEpoch: 1_800_000_000_000_000_000)
        let status = Instancepoller_Control_V1_StatusResponse.with {
            $0.holder = "ctl-b"
            $0.controllers = [
                .with {
                    $0.holder = "ctl-a"; $0.host = "alpha"; $0.pid = 101
                    $0.lastRenewalUnixNano = (now + .milliseconds(-3400)).nanosecondsSinceEpoch
                    $0.pairs = ["aws/main", "aws/ops"]
                },
                .with {
                    $0.holder = "ctl-b"; $0.host = "beta"; $0.pid = 202
                    $0.lastRenewalUnixNano = (now + .seconds(-75)).nanosecondsSinceEpoch
                    $0.pairs = ["gce/main"]
                },
                .with {
                    // Its clock is ahead of this one: no negative age.
                    $0.holder = "ctl-c"; $0.host = "gamma"; $0.pid = 303
                    $0.lastRenewalUnixNano = (now + .seconds(2)).nanosecondsSinceEpoch
                },
            ]
        }
        #expect(ControlService.controllerRows(status, now: now) == [
            [" ", "ctl-a", "alpha", "pid 101", "renewed 3s ago", "2 pairs: aws/main, aws/ops"],
            ["*", "ctl-b", "beta", "pid 202", "renewed 1m15s ago", "1 pair: gce/main"],
            [" ", "ctl-c", "gamma", "pid 303", "renewed 0s ago", "0 pairs"],
        ])
        #expect(ControlService.age(.seconds(2 * 3600 + 5 * 60 + 9)) == "2h05m")
        #expect(ControlService.age(.seconds(59)) == "59s")

        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(try status.jsonString(options: options).utf8)) as? [String: Any])
        #expect(json["holder"] as? String == "ctl-b")
        let controllers = try #require(json["controllers"] as? [[String: Any]])
        #expect(controllers.map { $0["holder"] as? String } == ["ctl-a", "ctl-b", "ctl-c"])
        #expect(controllers[0]["pairs"] as? [String] == ["aws/main", "aws/ops"])
        #expect(controllers[0]["last_renewal_unix_nano"] as? String == "\((now + .milliseconds(-3400)).nanosecondsSinceEpoch)")
    }
}

/// Calls `method` on `service` as the RPC server would (its registered
/// handler, the request and answer as bytes).
func callControl<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
    _ service: ControlService, _ method: MethodDescriptor<Request, Response>, _ request: Request
) async throws -> Response {
    var registry = RPCServiceRegistry()
    service.register(into: &registry)
    let handler = try registry.handler(service: method.service, method: method.method).get()
    let answer = try await handler(
        ByteBuffer(bytes: try request.serializedBytes() as [UInt8]), RPCServerContext(service: method.service, method: method.method))
    return try Response(serializedBytes: Array(answer.payload.readableBytesView))
}

/// A store that forwards every ``MachineStore`` call to `inner`: a test
/// double adopts it and writes only what it changes.
protocol ForwardingStore: MachineStore {
    var inner: any MachineStore { get }
}

extension ForwardingStore {
    func addMachine(_ machine: Machine) async throws { try await inner.addMachine(machine) }
    func addMachines(_ machines: [Machine]) async throws { try await inner.addMachines(machines) }
    func updateMachine(_ machine: Machine) async throws { try await inner.updateMachine(machine) }
    func reportAgentStatus(machineID: String, _ status: Machine.AgentStatus) async throws -> Machine {
        try await inner.reportAgentStatus(machineID: machineID, status)
    }
    func removeMachine(id: String) async throws { try await inner.removeMachine(id: id) }
    func machine(id: String) async throws -> Machine? { try await inner.machine(id: id) }
    func machines() async throws -> [Machine] { try await inner.machines() }
    func machines(of key: CredentialKey) async throws -> [Machine] { try await inner.machines(of: key) }
    func workPairs() async throws -> [CredentialKey] { try await inner.workPairs() }
    func machines(after id: String, limit: Int, filter: MachineFilter) async throws -> [ListedMachine] {
        try await inner.machines(after: id, limit: limit, filter: filter)
    }
    func machineIDs(after id: String, limit: Int, filter: MachineFilter) async throws -> [String] {
        try await inner.machineIDs(after: id, limit: limit, filter: filter)
    }
    func existingMachineIDs(_ ids: [String]) async throws -> Set<String> { try await inner.existingMachineIDs(ids) }
    func summary(now: Timestamp) async throws -> FleetSummary { try await inner.summary(now: now) }
    func importMachines(_ machines: [Machine], update: Bool) async throws -> ImportCounts {
        try await inner.importMachines(machines, update: update)
    }
    func removeMachines(ids: [String]) async throws { try await inner.removeMachines(ids: ids) }
    func applyPoll(_ results: [PollResult], schedule: [ScheduleEntry], fence: LeaseFence?) async throws -> [MachineEvent] {
        try await inner.applyPoll(results, schedule: schedule, fence: fence)
    }
    func setInstanceStatus(machineID: String, _ status: InstanceStatusRecord) async throws {
        try await inner.setInstanceStatus(machineID: machineID, status)
    }
    func statusHistory(machineID: String) async throws -> [InstanceStatusRecord] { try await inner.statusHistory(machineID: machineID) }
    func schedule() async throws -> [ScheduleEntry] { try await inner.schedule() }
    func schedule(of key: CredentialKey) async throws -> [ScheduleEntry] { try await inner.schedule(of: key) }
    func saveSchedule(_ entries: [ScheduleEntry], removing: [String]) async throws { try await inner.saveSchedule(entries, removing: removing) }
    func events(after revision: Int64, limit: Int) async throws -> [MachineEvent] { try await inner.events(after: revision, limit: limit) }
    func externalEvents(after revision: Int64, limit: Int) async throws -> ExternalEvents {
        try await inner.externalEvents(after: revision, limit: limit)
    }
    func latestRevision() async throws -> Int64 { try await inner.latestRevision() }
    func pruneEvents(before: Timestamp?, keepingLast: Int64?) async throws -> Int {
        try await inner.pruneEvents(before: before, keepingLast: keepingLast)
    }
    func credential(provider: String, name: String) async throws -> StoredCredential? {
        try await inner.credential(provider: provider, name: name)
    }
    func credentials() async throws -> [StoredCredential] { try await inner.credentials() }
    func setCredential(_ credential: StoredCredential) async throws { try await inner.setCredential(credential) }
    func invalidateCredential(provider: String, name: String, reason: String) async throws {
        try await inner.invalidateCredential(provider: provider, name: name, reason: reason)
    }
    func clearCredentialInvalid(provider: String, name: String, source: MachineEvent.Source) async throws -> Bool {
        try await inner.clearCredentialInvalid(provider: provider, name: name, source: source)
    }
    func removeCredential(provider: String, name: String) async throws { try await inner.removeCredential(provider: provider, name: name) }
    func credentialUse(provider: String) async throws -> [String: Int] { try await inner.credentialUse(provider: provider) }
    func resealCredentials() async throws -> Int { try await inner.resealCredentials() }
}

/// A shared store for tests: machines, events and credentials in an
/// in-memory SQLite store; controllers and leases kept here, on a database
/// clock of the test's choosing (``databaseNow``). Prunes can be made to
/// fail.
final class FakeLeaseStore: ForwardingStore, LeaseStore {
    private struct State {
        var databaseNow: Timestamp
        var controllers: [String: ControllerRecord] = [:]
        var leases: [CredentialKey: LeaseRecord] = [:]
        var failingPrunes = 0
    }

    let inner: any MachineStore
    private let state: NIOLockedValueBox<State>
    static let ttl: Duration = .seconds(10)

    init(clock: any PollClock, databaseNow: Timestamp) throws {
        inner = try SQLiteMachineStore.inMemory(clock: clock, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        state = NIOLockedValueBox(State(databaseNow: databaseNow))
    }

    /// Records that `controller` renewed its membership `ago` before the
    /// database's now, for ``ttl``.
    func renewed(_ controller: ControllerIdentity, ago: Duration) {
        state.withLockedValue { state in
            let at = state.databaseNow + (.zero - ago)
            state.controllers[controller.holder] = ControllerRecord(identity: controller, lastRenewal: at, expiresAt: at + Self.ttl)
        }
    }

    var leases: [LeaseRecord] {
        get { state.withLockedValue { $0.leases.values.sorted { $0.key.description < $1.key.description } } }
        set { state.withLockedValue { $0.leases = Dictionary(uniqueKeysWithValues: newValue.map { ($0.key, $0) }) } }
    }

    /// The next `times` prunes throw a StoreError, removing nothing.
    func failPrunes(times: Int) { state.withLockedValue { $0.failingPrunes = times } }

    func pruneEvents(before: Timestamp?, keepingLast: Int64?) async throws -> Int {
        let fails = state.withLockedValue { state in
            defer { state.failingPrunes = max(0, state.failingPrunes - 1) }
            return state.failingPrunes > 0
        }
        if fails { throw StoreError(.unavailable, "pruning the events log: database is locked (injected)") }
        return try await inner.pruneEvents(before: before, keepingLast: keepingLast)
    }

    func heartbeat(_ controller: ControllerIdentity, ttl: Duration) async throws -> [ControllerRecord] {
        state.withLockedValue { state in
            state.controllers[controller.holder] = ControllerRecord(
                identity: controller, lastRenewal: state.databaseNow, expiresAt: state.databaseNow + ttl)
        }
        return try await controllers()
    }

    func controllers() async throws -> [ControllerRecord] {
        state.withLockedValue { state in
            state.controllers.values.filter { $0.expiresAt > state.databaseNow }.sorted { $0.identity.holder < $1.identity.holder }
        }
    }

    func leases() async throws -> [LeaseRecord] { leases }

    func claimLease(_ key: CredentialKey, holder: String, ttl: Duration) async throws -> LeaseFence? {
        state.withLockedValue { state in
            let old = state.leases[key]
            if let old, old.expiresAt > state.databaseNow, old.holder != holder { return nil }
            let lease = LeaseRecord(key: key, holder: holder, epoch: (old?.epoch ?? 0) + 1, expiresAt: state.databaseNow + ttl)
            state.leases[key] = lease
            return lease.fence
        }
    }

    func renewLeases(_ fences: [LeaseFence], ttl: Duration) async throws -> [LeaseFence] {
        state.withLockedValue { state in
            fences.filter { fence in
                guard state.leases[fence.key]?.fence == fence else { return false }
                state.leases[fence.key]?.expiresAt = state.databaseNow + ttl
                return true
            }
        }
    }

    func releaseLeases(_ fences: [LeaseFence]) async throws {
        state.withLockedValue { state in
            for fence in fences where state.leases[fence.key]?.fence == fence { state.leases[fence.key]?.expiresAt = state.databaseNow }
        }
    }

    func leave(holder: String) async throws {
        state.withLockedValue { state in
            for (key, lease) in state.leases where lease.holder == holder { state.leases[key]?.expiresAt = state.databaseNow }
            state.controllers[holder] = nil
        }
    }
}
