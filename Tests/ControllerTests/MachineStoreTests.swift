@_spi(Testing) import Controller
import ControlAPI
import Core
import Foundation
import GRDB
import Logging
import NIOConcurrencyHelpers
import SwiftProtobuf
import Testing
import TestSupport

/// Which store a behaviour test runs against: every store must answer
/// alike (docs/DESIGN.md §6.1).
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

/// One store's data (a SQLite file in a private directory, or a fresh
/// PostgreSQL database of the shared test cluster), on a manual clock,
/// logging into a capture. `open()` can be called again to open the same
/// data as a restarted controller or another controller would. PostgreSQL
/// stores are run (their `run()` in a task) and migrated when opened, and
/// stopped when the test ends (``with(_:_:)``).
final class MachineStoreFixture: Sendable {
    let kind: StoreKind
    let clock = ManualPollClock()
    let logs = LogCapture()
    private let directory: TemporaryDirectory?
    let cluster: PostgresCluster?
    let database: String
    private let runs = NIOLockedValueBox<[Task<Void, Never>]>([])

    private init(kind: StoreKind, cluster: PostgresCluster? = nil) async throws {
        self.kind = kind
        switch kind {
        case .sqlite:
            let directory = try TemporaryDirectory()
            self.directory = directory
            self.cluster = nil
            database = directory.file("machines.db")
        case .postgres:
            let cluster = if let cluster { cluster } else { try await PostgresCluster.shared() }
            directory = nil
            self.cluster = cluster
            database = try await cluster.createDatabase()
        }
    }

    /// Runs `body` with a fixture of `kind`, stopping its stores afterwards.
    static func with(_ kind: StoreKind, cluster: PostgresCluster? = nil, _ body: (MachineStoreFixture) async throws -> Void) async throws {
        let fixture = try await MachineStoreFixture(kind: kind, cluster: cluster)
        do {
            try await body(fixture)
        } catch {
            await fixture.close()
            throw error
        }
        await fixture.close()
    }

    func open(sealer: CredentialSealer? = nil) async throws -> any MachineStore {
        switch kind {
        case .sqlite: try SQLiteMachineStore(path: database, sealer: sealer, clock: clock, logger: logs.logger(label: "store"))
        case .postgres: try await openPostgres(sealer: sealer)
        }
    }

    /// A PostgreSQL store on this fixture's database, running and migrated.
    func openPostgres(
        sealer: CredentialSealer? = nil, connectionWait: Duration = .seconds(10), logs: LogCapture? = nil
    ) async throws -> PostgresMachineStore {
        let cluster = try #require(cluster)
        let store = PostgresMachineStore(
            location: cluster.location(database: database), password: cluster.password, sealer: sealer, clock: clock,
            logger: (logs ?? self.logs).logger(label: "store"), connectionWait: connectionWait)
        let run = Task {
            do { try await store.run() } catch { Issue.record("the store did not run: \(error)") }
        }
        runs.withLockedValue { $0.append(run) }
        try await store.migrate()
        return store
    }

    func close() async {
        let runs = runs.withLockedValue { $0 }
        for run in runs { run.cancel() }
        for run in runs { await run.value }
        directory?.remove()
    }

    // MARK: Under the store

    /// Runs SQL on the data directly (one statement for SQLite).
    func execute(_ sql: String) async throws {
        switch kind {
        case .sqlite: try await rawSQLite().write { db in try db.execute(sql: sql) }
        case .postgres: try await #require(cluster).psql(sql, database: database)
        }
    }

    /// The first column of each row, as text.
    func column(_ sql: String) async throws -> [String] {
        switch kind {
        case .sqlite:
            return try await rawSQLite().read { db in try String.fetchAll(db, sql: sql) }
        case .postgres:
            let output = try await #require(cluster).psql(sql, database: database)
            return output.isEmpty ? [] : output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        }
    }

    func count(_ table: String) async throws -> Int {
        switch kind {
        case .sqlite: return try await rawSQLite().read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM \(table)") ?? -1 }
        case .postgres: return Int(try await column("SELECT count(*) FROM \(table)").first ?? "") ?? -1
        }
    }

    private func rawSQLite() throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        return try DatabaseQueue(path: database, configuration: configuration)
    }
}

/// Values the store tests share.
enum StoreSamples {
    static let interfaces: [ProviderV1.NetworkInterface] = [
        .with {
            $0.deviceIndex = 0
            $0.macAddress = "02:00:00:00:00:01"
            $0.providerID = "eni-1"
            $0.cidr = "10.0.1.0/24"
            $0.primary = true
            $0.addresses = [.with { $0.value = "10.0.1.5"; $0.type = .ipv4; $0.scope = .cloudLocal; $0.cidr = "10.0.1.0/24" }]
            $0.shadowAddresses = [.with { $0.value = "203.0.113.7"; $0.type = .ipv4; $0.scope = .public }]
        },
        .with { $0.deviceIndex = 1; $0.providerID = "eni-2" },
    ]
    static let running = InstanceStatusRecord(state: .running, rawStatus: "running")

    static func machine(_ id: String, instanceID: String = "i-1", provider: String = "fake", credential: String = "main") -> Machine {
        Machine(id: id, provider: provider, credential: credential, instanceID: instanceID, agentStatus: .pending)
    }

    /// 32 bytes of key `seed`.
    static func key(_ seed: UInt8) -> [UInt8] { (0..<32).map { UInt8(truncatingIfNeeded: Int($0) &* 7 &+ Int(seed)) } }
}

/// The behaviour every machine store shares, run against each.
@Suite("Machine store")
struct MachineStoreTests {
    typealias S = StoreSamples

    // MARK: Machines

    @Test(arguments: StoreKind.allCases)
    func machinesRoundTripEveryField(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            let stamped = InstanceStatusRecord(
                state: .provisioningError, rawStatus: "failed", message: "no capacity",
                updatedAt: Timestamp(nanosecondsSinceEpoch: 1_650_000_000_123_456_789))
            let full = Machine(
                id: "m-full", provider: "aws", credential: "prod", instanceID: "i-0abc", life: .dying, manual: true,
                agentStatus: .down, agentMessage: "lost", agentStartedAt: Timestamp(nanosecondsSinceEpoch: 1_600_000_000_000_000_001),
                instanceStatus: stamped, interfaces: S.interfaces, pollError: "throttled")
            let bare = Machine(id: "m-bare", provider: "aws", credential: "prod")
            var emptyError = Machine(id: "m-empty-error", provider: "aws", credential: "prod")
            emptyError.pollError = ""
            try await store.addMachine(full)
            try await store.addMachine(bare)
            try await store.addMachine(emptyError)
            #expect(try await store.machine(id: "m-full") == full)
            #expect(try await store.machine(id: "m-bare") == bare)
            #expect(try await store.machine(id: "m-empty-error")?.pollError == "", "an empty error is not no error")
            #expect(try await store.machine(id: "nope") == nil)
            #expect(try await store.machines() == [bare, emptyError, full])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func addUpdateRemoveLogExternalEventsInOrder(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            #expect(try await store.latestRevision() == 0)
            try await store.addMachine(S.machine("m1"))
            fixture.clock.advance(by: .seconds(1))
            try await store.addMachine(S.machine("m2", instanceID: ""))
            var m2 = S.machine("m2", instanceID: "i-2")
            try await store.updateMachine(m2)
            m2.life = .dead
            try await store.updateMachine(m2)
            try await store.removeMachine(id: "m1")

            let events = try await store.events(after: 0, limit: 100)
            #expect(events.map(\.kind) == [.machineAdded, .machineAdded, .machineChanged, .machineChanged, .machineRemoved])
            #expect(events.map(\.machineID) == ["m1", "m2", "m2", "m2", "m1"])
            #expect(events.allSatisfy { $0.source == .external && $0.credential.isEmpty })
            #expect(events.map(\.revision) == [1, 2, 3, 4, 5])
            #expect(events[0].at == Timestamp(nanosecondsSinceEpoch: 1_700_000_000_000_000_000))
            #expect(events[1].at == events[0].at + .seconds(1))
            #expect(try await store.latestRevision() == events.last?.revision)
            #expect(try await store.machine(id: "m2")?.life == .dead)
            #expect(try await store.machine(id: "m1") == nil)

            // Paging: after and limit.
            #expect(try await store.events(after: events[1].revision, limit: 2) == Array(events[2...3]))
            #expect(try await store.events(after: events[4].revision, limit: 10).isEmpty)
            #expect(try await store.events(after: 0, limit: 0).isEmpty)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func everyRelevantFieldCountsAsAChange(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachine(S.machine("m1"))
            let changes: [(inout Machine) -> Void] = [
                { $0.life = .dying }, { $0.instanceID = "i-9" }, { $0.agentStatus = .error },
                { $0.provider = "other" }, { $0.credential = "spare" }, { $0.manual = true },
            ]
            for change in changes {
                var machine = try #require(try await store.machine(id: "m1"))
                change(&machine)
                let before = try await store.latestRevision()
                try await store.updateMachine(machine)
                #expect(try await store.events(after: before, limit: 10).map(\.kind) == [.machineChanged])
                #expect(try await store.machine(id: "m1") == machine)
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func anUpdateWithNoRelevantChangeLogsNothing(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachine(S.machine("m1"))
            let revision = try await store.latestRevision()
            try await store.updateMachine(S.machine("m1"))
            // The polled truth is the poller's: an update neither writes nor logs it.
            var polled = S.machine("m1")
            polled.instanceStatus = S.running
            polled.interfaces = S.interfaces
            polled.pollError = "boom"
            try await store.updateMachine(polled)
            #expect(try await store.latestRevision() == revision)
            #expect(try await store.machine(id: "m1") == S.machine("m1"))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func mistakesAreStoreErrorsNamingWhat(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachine(S.machine("m-dup"))
            let revision = try await store.latestRevision()

            let duplicate = await #expect(throws: StoreError.self) { try await store.addMachine(S.machine("m-dup")) }
            #expect(duplicate == StoreError(.alreadyExists, "machine \"m-dup\" already exists"))
            let unknown = await #expect(throws: StoreError.self) { try await store.updateMachine(S.machine("m-ghost")) }
            #expect(unknown == StoreError.noMachine("m-ghost"))
            let removed = await #expect(throws: StoreError.self) { try await store.removeMachine(id: "m-gone") }
            #expect(removed == StoreError.noMachine("m-gone"))
            let status = await #expect(throws: StoreError.self) { try await store.setInstanceStatus(machineID: "m-none", S.running) }
            #expect(status == StoreError.noMachine("m-none"))
            let report = await #expect(throws: StoreError.self) { try await store.reportAgentStatus(machineID: "m-none", .started) }
            #expect(report == StoreError.noMachine("m-none"))
            let credential = await #expect(throws: StoreError.self) {
                try await store.invalidateCredential(provider: "aws", name: "nope", reason: "x")
            }
            #expect(credential == StoreError.noCredential(provider: "aws", name: "nope"))
            // A failed change logs nothing.
            #expect(try await store.latestRevision() == revision)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func manyMachinesAreAddedAllOrNone(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachines([S.machine("m1"), S.machine("m2")])
            await #expect(throws: StoreError(.alreadyExists, "machine \"m1\" already exists")) {
                try await store.addMachines([S.machine("m3"), S.machine("m1")])
            }
            #expect(try await store.machines().map(\.id) == ["m1", "m2"], "m3 rolled back with the rest")
            #expect(try await store.events(after: 0, limit: 10).map(\.kind) == [.machineAdded, .machineAdded])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func importCountsAndUpdatesAndRemovingManyIsAllOrNone(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachines([S.machine("m1"), S.machine("m2")])
            try await store.applyPoll([PollResult(machineID: "m1", instanceStatus: S.running)], schedule: [])
            var m1 = S.machine("m1", instanceID: "i-new")
            m1.life = .dying
            m1.agentStatus = .started
            let revision = try await store.latestRevision()
            fixture.clock.advance(by: .seconds(1))
            let counts = try await store.importMachines([m1, S.machine("m2"), S.machine("m3")], update: true)
            #expect(counts == ImportCounts(added: 1, updated: 1, unchanged: 1))
            let stored = try #require(try await store.machine(id: "m1"))
            #expect(stored.instanceID == "i-new" && stored.agentStatus == .started && stored.agentStartedAt == fixture.clock.now)
            #expect(stored.life == .alive, "an import keeps the life")
            #expect(stored.instanceStatus.state == .running, "and the polled truth")
            #expect(try await store.events(after: revision, limit: 10).map { "\($0.kind.rawValue) \($0.machineID)" } == [
                "machine-changed m1", "machine-added m3",
            ])
            // Without update, one taken id fails them all.
            await #expect(throws: StoreError.machineExists("m2")) {
                try await store.importMachines([S.machine("m4"), S.machine("m2")], update: false)
            }
            #expect(try await store.existingMachineIDs(["m1", "m4", "m9"]) == ["m1"])
            #expect(try await store.importMachines([], update: false) == ImportCounts())

            // Removing many: all, or none when one is not there (the first
            // such in the order given, a repeat included).
            let before = try await store.latestRevision()
            await #expect(throws: StoreError.noMachine("m-ghost")) { try await store.removeMachines(ids: ["m1", "m-ghost", "m2"]) }
            await #expect(throws: StoreError.noMachine("m1")) { try await store.removeMachines(ids: ["m1", "m1"]) }
            #expect(try await store.latestRevision() == before)
            #expect(try await store.machines().map(\.id) == ["m1", "m2", "m3"])
            try await store.saveSchedule(
                [ScheduleEntry(machineID: "m3", group: .short, interval: .seconds(3), due: fixture.clock.now)], removing: [])
            try await store.removeMachines(ids: ["m3", "m1"])
            #expect(try await store.machines().map(\.id) == ["m2"])
            #expect(try await store.schedule().isEmpty)
            #expect(try await store.events(after: before, limit: 10).map { "\($0.kind.rawValue) \($0.machineID)" } == [
                "machine-removed m3", "machine-removed m1",
            ])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func thePairsMachinesAndScheduleAndTheWorkPairs(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            var dead = S.machine("d1", credential: "old")
            dead.life = .dead
            var manual = S.machine("h1", provider: "metal", credential: "lab")
            manual.manual = true
            try await store.addMachines([
                S.machine("b2"), S.machine("a1"), S.machine("c1", instanceID: "", credential: "spare"),
                S.machine("e1", provider: "aws", credential: "prod"), dead, manual,
            ])
            let main = CredentialKey(provider: "fake", name: "main")
            #expect(try await store.machines(of: main).map(\.id) == ["a1", "b2"])
            #expect(try await store.machines(of: CredentialKey(provider: "fake", name: "none")).isEmpty)
            #expect(try await store.workPairs() == [
                CredentialKey(provider: "aws", name: "prod"), CredentialKey(provider: "fake", name: "main"),
                CredentialKey(provider: "fake", name: "spare"), CredentialKey(provider: "metal", name: "lab"),
            ], "alive or dying, provisioned or not, manual or not; never dead")
            let t0 = fixture.clock.now
            try await store.saveSchedule(
                ["b2", "e1", "a1"].map { ScheduleEntry(machineID: $0, group: .short, interval: .seconds(3), due: t0) }, removing: [])
            #expect(try await store.schedule(of: main).map(\.machineID) == ["a1", "b2"])
            #expect(try await store.schedule(of: CredentialKey(provider: "aws", name: "prod")).map(\.machineID) == ["e1"])
        }
    }

    // MARK: Polled truth

    @Test(arguments: StoreKind.allCases)
    func applyPollWritesStatusAndInterfacesOnlyWhenChanged(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachine(S.machine("m1"))
            let afterAdd = try await store.latestRevision()
            fixture.clock.advance(by: .seconds(5))
            let firstWrite = fixture.clock.now

            let result = PollResult(machineID: "m1", instanceStatus: S.running, interfaces: S.interfaces)
            let returned = try await store.applyPoll([result], schedule: [])
            let polled = try await store.events(after: afterAdd, limit: 10)
            #expect(returned == polled, "it returns the events it logged")
            #expect(polled.map(\.kind) == [.instanceStatusChanged, .addressesChanged])
            #expect(polled.map(\.source) == [.poller, .poller])
            #expect(polled.map(\.machineID) == ["m1", "m1"])
            #expect(polled.map { [$0.oldValue, $0.newValue] } == [["unspecified", "running"], ["", "10.0.1.5,203.0.113.7"]])
            var stored = try #require(try await store.machine(id: "m1"))
            #expect(stored.instanceStatus == InstanceStatusRecord(state: .running, rawStatus: "running", updatedAt: firstWrite))
            #expect(stored.interfaces == S.interfaces)

            // The same again, later, even with another time on the record: nothing written.
            fixture.clock.advance(by: .seconds(5))
            var again = result
            again.instanceStatus?.updatedAt = fixture.clock.now
            #expect(try await store.applyPoll([again], schedule: []).isEmpty)
            #expect(try await store.latestRevision() == polled[1].revision)
            #expect(try await store.machine(id: "m1")?.instanceStatus.updatedAt == firstWrite)

            // Nil leaves each as it is.
            try await store.applyPoll([PollResult(machineID: "m1")], schedule: [])
            #expect(try await store.machine(id: "m1") == stored)
            #expect(try await store.latestRevision() == polled[1].revision)

            // A new message alone is a change; so are new interfaces alone.
            let stopping = InstanceStatusRecord(state: .running, rawStatus: "running", message: "scheduled stop")
            try await store.applyPoll([PollResult(machineID: "m1", instanceStatus: stopping)], schedule: [])
            stored = try #require(try await store.machine(id: "m1"))
            #expect(stored.instanceStatus.message == "scheduled stop")
            #expect(stored.instanceStatus.updatedAt == fixture.clock.now)
            try await store.applyPoll([PollResult(machineID: "m1", interfaces: [S.interfaces[1]])], schedule: [])
            #expect(try await store.machine(id: "m1")?.interfaces == [S.interfaces[1]])
            try await store.applyPoll([PollResult(machineID: "m1", interfaces: [])], schedule: [])
            #expect(try await store.machine(id: "m1")?.interfaces == [])
            let later = try await store.events(after: polled[1].revision, limit: 10)
            #expect(later.map(\.kind) == [.instanceStatusChanged, .addressesChanged, .machinePolled], "the last change kept the addresses (none)")
            #expect(later.map { [$0.oldValue, $0.newValue] } == [
                ["running", "running: scheduled stop"], ["10.0.1.5,203.0.113.7", ""], ["", ""],
            ])
            #expect(try await store.statusHistory(machineID: "m1").map(\.summary) == ["running: scheduled stop", "running"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func pollErrorsThatAppearOrClearAreLoggedOnce(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachine(S.machine("m1"))
            let revision = try await store.latestRevision()
            try await store.applyPoll([PollResult(machineID: "m1", pollError: "credential invalid: revoked")], schedule: [])
            #expect(try await store.machine(id: "m1")?.pollError == "credential invalid: revoked")
            try await store.applyPoll([PollResult(machineID: "m1", pollError: "credential invalid: revoked")], schedule: [])
            try await store.applyPoll([PollResult(machineID: "m1")], schedule: [])
            #expect(try await store.machine(id: "m1")?.pollError == nil)
            let events = try await store.events(after: revision, limit: 10)
            #expect(events.map(\.kind) == [.machinePolled, .machinePolled], "set, then cleared; the repeat is not news")
            #expect(events.map { [$0.oldValue, $0.newValue] } == [["", "credential invalid: revoked"], ["credential invalid: revoked", ""]])
            #expect(events.allSatisfy { $0.source == .poller }, "the poller's own writes: they do not wake it")
        }
    }

    /// SQL that makes any update of machine m-400 fail, and SQL that stops it.
    static func failureTrigger(_ kind: StoreKind) -> (create: [String], drop: String) {
        switch kind {
        case .sqlite:
            return (
                ["CREATE TRIGGER fail_m_400 BEFORE UPDATE ON machines WHEN NEW.id = 'm-400' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"],
                "DROP TRIGGER fail_m_400"
            )
        case .postgres:
            return (
                [
                    """
                    CREATE FUNCTION fail_m_400() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN RAISE EXCEPTION 'injected failure'; END $$;
                    CREATE TRIGGER fail_m_400 BEFORE UPDATE ON machines FOR EACH ROW WHEN (NEW.id = 'm-400') EXECUTE FUNCTION fail_m_400()
                    """
                ],
                "DROP TRIGGER fail_m_400 ON machines"
            )
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aBatchOf500IsOneTransactionAndSkipsRemovedMachines(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            let ids = (0..<500).map { "m-\($0)" }
            try await store.addMachines(ids.map { S.machine($0, instanceID: "i-\($0)") })
            try await store.removeMachine(id: "m-42")
            let before = try await store.latestRevision()
            let now = fixture.clock.now
            let results = ids.map { PollResult(machineID: $0, instanceStatus: S.running, interfaces: S.interfaces) }
            let schedule = ids.map { ScheduleEntry(machineID: $0, group: .long, interval: .seconds(900), due: now + .seconds(900)) }

            // A failure part-way through the batch leaves nothing of it behind.
            let trigger = Self.failureTrigger(kind)
            for statement in trigger.create { try await fixture.execute(statement) }
            let failure = await #expect(throws: StoreError.self) { try await store.applyPoll(results, schedule: schedule) }
            #expect(failure?.message.contains("injected failure") == true, "\(String(describing: failure))")
            #expect(failure?.message.hasPrefix("applying a poll of 500 machines in ") == true, "\(String(describing: failure))")
            #expect(try await store.latestRevision() == before)
            #expect(try await store.machine(id: "m-0")?.instanceStatus.state == .unspecified)
            #expect(try await store.schedule().isEmpty)
            #expect(try await fixture.count("status_history") == 0)
            try await fixture.execute(trigger.drop)

            try await store.applyPoll(results, schedule: schedule)
            let events = try await store.events(after: before, limit: 1000)
            let expected = ids.filter { $0 != "m-42" }
            #expect(events.map(\.machineID) == expected.flatMap { [$0, $0] })
            #expect(events.map(\.kind) == expected.flatMap { _ in [MachineEvent.Kind.instanceStatusChanged, .addressesChanged] })
            #expect(events.allSatisfy { $0.source == .poller })
            #expect(events.map(\.revision) == Array((before + 1)...(before + 998)))
            let machines = try await store.machines()
            #expect(machines.count == 499)
            #expect(machines.allSatisfy { $0.instanceStatus.state == .running && $0.interfaces == S.interfaces })
            #expect(try await store.schedule().map(\.machineID) == expected.sorted())
        }
    }

    @Test(arguments: StoreKind.allCases)
    func setInstanceStatusWritesAndLogsAPollerEvent(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            var manual = S.machine("m-manual")
            manual.manual = true
            try await store.addMachine(manual)
            let revision = try await store.latestRevision()
            fixture.clock.advance(by: .seconds(1))
            let status = InstanceStatusRecord(state: .running, message: "Manually provisioned machine")
            try await store.setInstanceStatus(machineID: "m-manual", status)
            var expected = status
            expected.updatedAt = fixture.clock.now
            #expect(try await store.machine(id: "m-manual")?.instanceStatus == expected)
            let events = try await store.events(after: revision, limit: 10)
            #expect(events.map { [$0.kind.rawValue, $0.source.rawValue, $0.machineID, $0.oldValue, $0.newValue] } == [
                ["instance-status-changed", "poller", "m-manual", "unspecified", "running: Manually provisioned machine"],
            ])
            #expect(try await store.statusHistory(machineID: "m-manual") == [expected])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func externalEventsLeaveThePollersOwnOutAndSayHowFarTheLogWasRead(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachines([S.machine("m1"), S.machine("m2"), S.machine("m3")])  // 1, 2, 3
            try await store.applyPoll([PollResult(machineID: "m1", instanceStatus: S.running)], schedule: [])  // 4
            try await store.removeMachine(id: "m2")  // 5
            try await store.applyPoll([PollResult(machineID: "m3", pollError: "boom")], schedule: [])  // 6
            let all = try await store.externalEvents(after: 0, limit: 10)
            #expect(all.events.map(\.revision) == [1, 2, 3, 5])
            #expect(all.events.allSatisfy { $0.source == .external })
            #expect(all.through == 6, "read to the end, the poller's last write included")
            let page = try await store.externalEvents(after: 0, limit: 2)
            #expect(page.events.map(\.revision) == [1, 2] && page.through == 2, "a full page: read up to its last event")
            let rest = try await store.externalEvents(after: page.through, limit: 2)
            #expect(rest.events.map(\.revision) == [3, 5] && rest.through == 5)
            #expect(try await store.externalEvents(after: 6, limit: 10) == ExternalEvents(events: [], through: 6))
            #expect(try await store.externalEvents(after: 2, limit: 0) == ExternalEvents(events: [], through: 2))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func theStatusHistoryKeepsTheLastTwentyNewestFirstAndGoesWithTheMachine(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachines([S.machine("m1"), S.machine("m2")])
            for index in 1...25 {
                fixture.clock.advance(by: .seconds(1))
                let status = InstanceStatusRecord(state: .running, rawStatus: "running", message: "change \(index)")
                try await store.applyPoll(
                    [PollResult(machineID: "m1", instanceStatus: status), PollResult(machineID: "m2", instanceStatus: status)], schedule: [])
            }
            let history = try await store.statusHistory(machineID: "m1")
            #expect(history.map(\.message) == (6...25).reversed().map { "change \($0)" })
            #expect(history.first?.updatedAt == fixture.clock.now)
            try await store.removeMachine(id: "m1")
            #expect(try await store.statusHistory(machineID: "m1").isEmpty)
            #expect(try await store.statusHistory(machineID: "m2").count == 20)
            #expect(try await fixture.count("status_history") == 20, "trimmed in the store, not only when read")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func everyAgentStartIsRecordedAndOtherReportsAreNot(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachine(S.machine("m1"))
            #expect(try await store.machine(id: "m1")?.agentStartedAt == nil)
            var revision = try await store.latestRevision()
            var starts: [Timestamp] = []
            for _ in 0..<2 {
                fixture.clock.advance(by: .seconds(10))
                let machine = try await store.reportAgentStatus(machineID: "m1", .started)
                #expect(machine.agentStatus == .started && machine.agentStartedAt == fixture.clock.now)
                #expect(try await store.machine(id: "m1") == machine)
                #expect(try await store.events(after: revision, limit: 10).map(\.kind) == [.machineChanged], "a repeated start is news")
                revision = try await store.latestRevision()
                starts.append(fixture.clock.now)
            }
            fixture.clock.advance(by: .seconds(10))
            #expect(try await store.reportAgentStatus(machineID: "m1", .down).agentStartedAt == starts[1])
            #expect(try await store.events(after: revision, limit: 10).map(\.kind) == [.machineChanged])
            revision = try await store.latestRevision()
            _ = try await store.reportAgentStatus(machineID: "m1", .down)
            #expect(try await store.latestRevision() == revision, "the same report again is not news")

            // An update that starts the agent records a start too; one that
            // keeps it started does not.
            var machine = try #require(try await store.machine(id: "m1"))
            machine.agentStatus = .started
            try await store.updateMachine(machine)
            let startedByUpdate = fixture.clock.now
            #expect(try await store.machine(id: "m1")?.agentStartedAt == startedByUpdate)
            fixture.clock.advance(by: .seconds(10))
            machine.instanceID = "i-2"
            try await store.updateMachine(machine)
            #expect(try await store.machine(id: "m1")?.agentStartedAt == startedByUpdate)
            // A machine added with its agent started has started.
            var added = S.machine("m2")
            added.agentStatus = .started
            try await store.addMachine(added)
            #expect(try await store.machine(id: "m2")?.agentStartedAt == fixture.clock.now)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aProvisioningErrorSetsTheAgentInErrorOnceWithAnEvent(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.addMachine(S.machine("m1"))
            let revision = try await store.latestRevision()
            for _ in 0..<2 { try await store.applyPoll([PollResult(machineID: "m1", agentError: "InsufficientInstanceCapacity")], schedule: []) }
            let machine = try #require(try await store.machine(id: "m1"))
            #expect(machine.agentStatus == .error && machine.agentMessage == "InsufficientInstanceCapacity")
            let events = try await store.events(after: revision, limit: 10)
            #expect(events.map { [$0.kind.rawValue, $0.source.rawValue, $0.oldValue, $0.newValue] } == [
                ["agent-status-changed", "poller", "pending", "error: InsufficientInstanceCapacity"],
            ])
            // The agent's own next report clears the message.
            #expect(try await store.reportAgentStatus(machineID: "m1", .error).agentMessage == "")
        }
    }

    // MARK: Schedule

    @Test(arguments: StoreKind.allCases)
    func scheduleRoundTripsAndFollowsItsMachines(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            for id in ["m1", "m2", "m3"] { try await store.addMachine(S.machine(id)) }
            let revision = try await store.latestRevision()
            let t0 = fixture.clock.now
            let entries = [
                ScheduleEntry(machineID: "m3", group: .short, interval: .seconds(3), due: t0 + .seconds(3)),
                ScheduleEntry(machineID: "m1", group: .long, interval: .seconds(900), due: t0 + .milliseconds(812_345)),
                ScheduleEntry(machineID: "m2", group: .short, interval: .seconds(48), due: t0 + .seconds(48)),
                // Not (or no longer) in the store: skipped.
                ScheduleEntry(machineID: "m-gone", group: .short, interval: .seconds(3), due: t0),
            ]
            try await store.saveSchedule(entries, removing: [])
            #expect(try await store.schedule() == [entries[1], entries[2], entries[0]])

            let bumped = ScheduleEntry(machineID: "m3", group: .short, interval: .seconds(6), due: t0 + .seconds(9))
            try await store.saveSchedule([bumped], removing: ["m2", "m-never"])
            #expect(try await store.schedule() == [entries[1], bumped])

            // Of two entries for one machine, the later wins.
            let twice = ScheduleEntry(machineID: "m3", group: .short, interval: .seconds(12), due: t0 + .seconds(12))
            try await store.saveSchedule([bumped, twice], removing: [])
            #expect(try await store.schedule() == [entries[1], twice])

            // Applying a poll saves its schedule too.
            let long = ScheduleEntry(machineID: "m3", group: .long, interval: .seconds(900), due: t0 + .seconds(950))
            try await store.applyPoll([], schedule: [long, entries[3]])
            #expect(try await store.schedule() == [entries[1], long])
            #expect(try await store.latestRevision() == revision)

            try await store.removeMachine(id: "m3")
            #expect(try await store.schedule() == [entries[1]])
        }
    }

    // MARK: The fleet

    @Test(arguments: StoreKind.allCases)
    func listingsPageAndFilterAndTheSummaryCounts(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            // Byte order: upper case before lower case, as SQLite compares.
            let ids = ["B-1", "a-1", "a-2", "a-3", "b-1", "c-1"]
            try await store.addMachines(ids.map { S.machine($0, credential: $0.hasPrefix("a") ? "main" : "spare") })
            let t0 = fixture.clock.now
            try await store.applyPoll(
                [
                    PollResult(machineID: "a-1", instanceStatus: S.running),
                    PollResult(machineID: "a-2", instanceStatus: .notFound(at: nil), pollError: "gone"),
                    PollResult(machineID: "b-1", instanceStatus: InstanceStatusRecord(state: .stopped, rawStatus: "stopped")),
                ],
                schedule: [
                    ScheduleEntry(machineID: "a-1", group: .long, interval: .seconds(900), due: t0 + .seconds(900)),
                    ScheduleEntry(machineID: "a-2", group: .short, interval: .seconds(3), due: t0 + .seconds(-10)),
                    ScheduleEntry(machineID: "b-1", group: .short, interval: .seconds(6), due: t0),
                ])
            _ = try await store.reportAgentStatus(machineID: "c-1", .started)

            #expect(try await store.machineIDs(after: "", limit: 100, filter: .all) == ids)
            let first = try await store.machines(after: "", limit: 2, filter: .all)
            #expect(first.map(\.machine.id) == ["B-1", "a-1"])
            #expect(first[1].schedule == ScheduleEntry(machineID: "a-1", group: .long, interval: .seconds(900), due: t0 + .seconds(900)))
            #expect(first[0].schedule == nil)
            #expect(first[1].machine == (try await store.machine(id: "a-1")))
            #expect(try await store.machines(after: "a-1", limit: 2, filter: .all).map(\.machine.id) == ["a-2", "a-3"])
            #expect(try await store.machines(after: "c-1", limit: 2, filter: .all).isEmpty)
            #expect(try await store.machines(after: "", limit: 0, filter: .all).isEmpty)

            let filters: [(MachineFilter, [String])] = [
                (MachineFilter(id: "a-2"), ["a-2"]),
                (MachineFilter(provider: "fake", credential: "spare"), ["B-1", "b-1", "c-1"]),
                (MachineFilter(provider: "aws"), []),
                (MachineFilter(state: .state(.running)), ["a-1"]),
                (MachineFilter(state: .state(.stopped)), ["b-1"]),
                (MachineFilter(state: .notFound), ["a-2"]),
                (MachineFilter(group: .short), ["a-2", "b-1"]),
                (MachineFilter(group: .long), ["a-1"]),
                (MachineFilter(group: .untracked), ["B-1", "a-3", "c-1"]),
                (MachineFilter(agentStatus: .started), ["c-1"]),
                (MachineFilter(withError: true), ["a-2"]),
                (MachineFilter(credential: "main", group: .short, withError: true), ["a-2"]),
            ]
            for (filter, expected) in filters {
                #expect(try await store.machineIDs(after: "", limit: 100, filter: filter) == expected, "\(filter)")
                #expect(try await store.machines(after: "", limit: 100, filter: filter).map(\.machine.id) == expected, "\(filter)")
            }

            let summary = try await store.summary(now: t0 + .seconds(1))
            var expected = FleetSummary()
            expected.machines = 6
            expected.byState = ["unspecified": 3, "running": 1, "stopped": 1, "unknown": 1]
            expected.shortGroup = 2
            expected.longGroup = 1
            expected.pollErrors = 1
            expected.overdue = 1
            expected.notFound = 1
            #expect(summary == expected)
            #expect(try await store.summary(now: t0 + .seconds(7)).overdue == 2)
        }
    }

    // MARK: Credentials

    @Test(arguments: StoreKind.allCases)
    func credentialsSetGetListInvalidateAndSetAgain(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            let expiry = Timestamp(nanosecondsSinceEpoch: 1_800_000_000_000_000_000)
            let main = StoredCredential(
                provider: "aws", name: "main", authType: "access-key",
                attributes: ["access-key": "AKIASECRETKEYID", "secret-key": "s3cr3t-value"], expiresAt: expiry)
            let other = StoredCredential(provider: "azure", name: "dev", authType: "service-principal", attributes: ["secret": "az-hidden"])
            try await store.setCredential(other)
            try await store.setCredential(main)
            #expect(try await store.credential(provider: "aws", name: "main") == main)
            #expect(try await store.credential(provider: "aws", name: "nope") == nil)
            #expect(try await store.credentials() == [main, other])

            try await store.invalidateCredential(provider: "aws", name: "main", reason: "AuthFailure: key revoked")
            #expect(try await store.credential(provider: "aws", name: "main")?.invalidReason == "AuthFailure: key revoked")

            var rotated = main
            rotated.attributes["secret-key"] = "n3w-s3cr3t"
            rotated.invalidReason = "ignored: setting clears the mark"
            try await store.setCredential(rotated)
            rotated.invalidReason = nil
            #expect(try await store.credential(provider: "aws", name: "main") == rotated)

            let events = try await store.events(after: 0, limit: 10)
            #expect(events.map(\.kind) == [.credentialSet, .credentialSet, .credentialInvalidated, .credentialSet])
            #expect(events.map(\.source) == [.external, .external, .poller, .external])
            #expect(events.map(\.credential) == ["azure/dev", "aws/main", "aws/main", "aws/main"])
            #expect(events.allSatisfy { $0.machineID.isEmpty })
        }
    }

    @Test(arguments: StoreKind.allCases)
    func anInvalidMarkIsClearedOnceAndARemovedCredentialSaysWhoStillNamesIt(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            try await store.setCredential(StoredCredential(provider: "fake", name: "main", authType: "token", attributes: ["t": "x"]))
            try await store.addMachines([S.machine("m1"), S.machine("m2"), S.machine("m3", credential: "spare")])
            #expect(try await store.credentialUse(provider: "fake") == ["main": 2, "spare": 1])
            #expect(try await store.credentialUse(provider: "aws") == [:])
            let revision = try await store.latestRevision()
            #expect(try await store.clearCredentialInvalid(provider: "fake", name: "main", source: .external) == false)
            #expect(try await store.latestRevision() == revision, "nothing to clear: nothing written")
            try await store.invalidateCredential(provider: "fake", name: "main", reason: "revoked")
            #expect(try await store.clearCredentialInvalid(provider: "fake", name: "main", source: .poller))
            #expect(try await store.credential(provider: "fake", name: "main")?.invalidReason == nil)
            await #expect(throws: StoreError.noCredential(provider: "fake", name: "nope")) {
                try await store.clearCredentialInvalid(provider: "fake", name: "nope", source: .external)
            }
            try await store.removeCredential(provider: "fake", name: "main")
            #expect(try await store.credential(provider: "fake", name: "main") == nil)
            await #expect(throws: StoreError.noCredential(provider: "fake", name: "main")) {
                try await store.removeCredential(provider: "fake", name: "main")
            }
            let events = try await store.events(after: revision, limit: 10)
            #expect(events.map { [$0.kind.rawValue, $0.source.rawValue, $0.credential, $0.oldValue, $0.newValue] } == [
                ["credential-invalidated", "poller", "fake/main", "", ""],
                ["credential-validated", "poller", "fake/main", "revoked", ""],
                ["credential-removed", "external", "fake/main", "", "2 machines"],
            ])
            #expect(try await store.machines().count == 3, "machines that name it stay")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func credentialSecretsAreNeverShownOrLogged(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            let secrets = ["AKIASECRETKEYID", "s3cr3t-value"]
            let credential = StoredCredential(
                provider: "aws", name: "main", authType: "access-key",
                attributes: ["access-key": secrets[0], "secret-key": secrets[1]])
            try await store.setCredential(credential)
            try await store.invalidateCredential(provider: "aws", name: "main", reason: "revoked")
            try await store.setCredential(credential)
            _ = try await store.credentials()

            let shown = String(describing: try #require(try await store.credential(provider: "aws", name: "main")))
            #expect(shown.contains("aws/main") && shown.contains("secret-key"))
            let logs = fixture.logs.all
            #expect(!logs.isEmpty)
            #expect(logs.allSatisfy { $0.level <= .debug })
            for secret in secrets {
                #expect(!shown.contains(secret))
                for record in logs {
                    #expect(!record.message.contains(secret))
                    #expect(!record.metadata.values.contains { $0.contains(secret) })
                }
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func credentialsAreSealedAtRestAndResealedWithANewKey(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let secret = "s3cr3t-sealed-value"
            let credential = StoredCredential(provider: "aws", name: "main", authType: "access-key", attributes: ["secret-key": secret])
            let other = StoredCredential(provider: "aws", name: "spare", authType: "access-key", attributes: ["secret-key": "other-" + secret])

            // Stored plain by a store without a key; resealing needs one.
            let plain = try await fixture.open()
            try await plain.setCredential(credential)
            await #expect(throws: StoreError.self) { try await plain.resealCredentials() }
            #expect(try await fixture.column("SELECT attributes FROM credentials").allSatisfy { $0.contains(secret) })

            let first = try CredentialSealer(keys: [S.key(1)])
            let sealed = try await fixture.open(sealer: first)
            #expect(try await sealed.credential(provider: "aws", name: "main") == credential, "a plain value still reads")
            #expect(try await sealed.resealCredentials() == 1)
            #expect(try await sealed.resealCredentials() == 0, "sealed with the current key already")
            try await sealed.setCredential(other)
            var stored = try await fixture.column("SELECT attributes FROM credentials ORDER BY name")
            #expect(stored.count == 2)
            #expect(stored.allSatisfy { $0.hasPrefix("sealed:v1:\(first.currentKeyID):") && !$0.contains(secret) }, "\(stored)")
            #expect(try await sealed.credentials() == [credential, other])
            let refused = await #expect(throws: StoreError.self) { try await plain.credentials() }
            #expect(refused?.kind == .failedPrecondition)
            #expect(refused?.message.contains("sealed") == true && refused?.message.contains(secret) == false)

            // Rotation: a new key first, the old one still opening.
            let rotated = try CredentialSealer(keys: [S.key(2), S.key(1)])
            let store = try await fixture.open(sealer: rotated)
            #expect(try await store.credentials() == [credential, other])
            #expect(try await store.resealCredentials() == 2)
            stored = try await fixture.column("SELECT attributes FROM credentials ORDER BY name")
            #expect(stored.allSatisfy { $0.hasPrefix("sealed:v1:\(rotated.currentKeyID):") && !$0.contains(secret) }, "\(stored)")
            // The old key can go.
            let newOnly = try await fixture.open(sealer: try CredentialSealer(keys: [S.key(2)]))
            #expect(try await newOnly.credentials() == [credential, other])
            let oldOnly = try await fixture.open(sealer: first)
            await #expect(throws: StoreError.self) { try await oldOnly.credential(provider: "aws", name: "main") }
        }
    }

    // MARK: The log

    @Test(arguments: StoreKind.allCases)
    func pruningKeepsTheLatestRevision(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            for index in 1...6 {
                try await store.addMachine(S.machine("m\(index)"))
                fixture.clock.advance(by: .seconds(10))
            }
            #expect(try await store.pruneEvents(before: nil, keepingLast: nil) == 0)
            // Events 1 and 2 are older than t0 + 20 s.
            let t0 = Timestamp(nanosecondsSinceEpoch: 1_700_000_000_000_000_000)
            #expect(try await store.pruneEvents(before: t0 + .seconds(20), keepingLast: nil) == 2)
            #expect(try await store.events(after: 0, limit: 10).map(\.revision) == [3, 4, 5, 6])
            #expect(try await store.pruneEvents(before: nil, keepingLast: 2) == 2)
            #expect(try await store.events(after: 0, limit: 10).map(\.revision) == [5, 6])
            #expect(try await store.pruneEvents(before: nil, keepingLast: 0) == 2)
            #expect(try await store.events(after: 0, limit: 10).isEmpty)
            #expect(try await store.latestRevision() == 6, "revisions are never reused")
            #expect(try await store.externalEvents(after: 0, limit: 10) == ExternalEvents(events: [], through: 6))
            try await store.addMachine(S.machine("m7"))
            #expect(try await store.events(after: 0, limit: 10).map(\.revision) == [7])
            // Reopened, the count goes on.
            let reopened = try await fixture.open()
            #expect(try await reopened.pruneEvents(before: nil, keepingLast: 0) == 1)
            try await reopened.addMachine(S.machine("m8"))
            #expect(try await reopened.latestRevision() == 8)
        }
    }

    /// Two stores write one database at once while a third follows the log:
    /// it reads revisions in strictly increasing order and never misses one
    /// that commits later with a lower number (what it read is the log).
    @Test(arguments: StoreKind.allCases)
    func eventsStayInOrderAcrossWriters(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let writers = [try await fixture.open(), try await fixture.open()]
            let reader = try await fixture.open()
            let done = NIOLockedValueBox(false)
            let perWriter = 25
            let read = try await withThrowingTaskGroup(of: [Int64]?.self) { group -> [Int64] in
                group.addTask {
                    var seen: [Int64] = []
                    while true {
                        // Whatever committed before the writers finished is
                        // there to read once the flag is seen.
                        let finished = done.withLockedValue { $0 }
                        let batch = try await reader.events(after: seen.last ?? 0, limit: 3)
                        seen += batch.map(\.revision)
                        if batch.isEmpty {
                            if finished { return seen }
                            await Task.yield()
                        }
                    }
                }
                group.addTask {
                    try await withThrowingTaskGroup(of: Void.self) { writing in
                        for (index, writer) in writers.enumerated() {
                            writing.addTask {
                                for number in 0..<perWriter {
                                    let id = "w\(index)-\(number)"
                                    try await writer.addMachine(S.machine(id))
                                    try await writer.applyPoll(
                                        [PollResult(machineID: id, instanceStatus: S.running, pollError: "slow")], schedule: [])
                                }
                            }
                        }
                        try await writing.waitForAll()
                    }
                    done.withLockedValue { $0 = true }
                    return nil
                }
                var read: [Int64] = []
                for try await result in group { if let result { read = result } }
                return read
            }
            let log = try await reader.events(after: 0, limit: 10_000).map(\.revision)
            #expect(log.count == perWriter * writers.count * 3)
            #expect(zip(read, read.dropFirst()).allSatisfy { $0 < $1 }, "strictly increasing")
            #expect(read == log, "nothing skipped and later found filled")
            #expect(try await reader.latestRevision() == log.last)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func theChangeHandlerHearsOfEveryCommittedChange(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let store = try await fixture.open()
            let calls = NIOLockedValueBox(0)
            switch store {
            case let store as SQLiteMachineStore: store.setChangeHandler { calls.withLockedValue { $0 += 1 } }
            case let store as PostgresMachineStore: store.setChangeHandler { calls.withLockedValue { $0 += 1 } }
            default: Issue.record("a store without a change handler")
            }
            try await store.addMachine(S.machine("m1"))
            #expect(calls.withLockedValue { $0 } >= 1, "called once the change committed")
            let before = calls.withLockedValue { $0 }
            try await store.saveSchedule([], removing: ["m1"])
            await #expect(throws: StoreError.self) { try await store.addMachine(S.machine("m1")) }
            if kind == .sqlite { #expect(calls.withLockedValue { $0 } == before, "nothing logged, nothing to hear") }
        }
    }

    // MARK: Restart

    @Test(arguments: StoreKind.allCases)
    func everythingSurvivesReopening(_ kind: StoreKind) async throws {
        try await MachineStoreFixture.with(kind) { fixture in
            let t0 = fixture.clock.now
            let credential = StoredCredential(provider: "aws", name: "main", authType: "access-key", attributes: ["k": "v"])
            let entry = ScheduleEntry(machineID: "m1", group: .long, interval: .seconds(900), due: t0 + .seconds(870))
            let (machine, revision): (Machine?, Int64)
            do {
                let store = try await fixture.open()
                try await store.addMachine(S.machine("m1"))
                try await store.applyPoll(
                    [PollResult(machineID: "m1", instanceStatus: S.running, interfaces: S.interfaces, pollError: "slow")],
                    schedule: [entry])
                try await store.setCredential(credential)
                machine = try await store.machine(id: "m1")
                revision = try await store.latestRevision()
            }
            let reopened = try await fixture.open()
            #expect(try await reopened.machine(id: "m1") == machine)
            #expect(try await reopened.machine(id: "m1")?.pollError == "slow")
            #expect(try await reopened.schedule() == [entry])
            #expect(try await reopened.credentials() == [credential])
            #expect(try await reopened.latestRevision() == revision)
            try await reopened.addMachine(S.machine("m2"))
            #expect(try await reopened.latestRevision() == revision + 1)
        }
    }
}
