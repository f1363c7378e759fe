@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Foundation
import GRDB
import Logging
import SwiftProtobuf
import Testing
import TestSupport

/// A store file in a private directory, on a manual clock, logging into a
/// capture. `open()` can be called again to open the same file as a
/// restarted controller or another process would.
struct StoreFixture {
    let directory: TemporaryDirectory
    let clock = ManualPollClock()
    let logs = LogCapture()

    init() throws { directory = try TemporaryDirectory() }

    var path: String { directory.file("machines.db") }

    func open() throws -> SQLiteMachineStore {
        try SQLiteMachineStore(path: path, clock: clock, logger: logs.logger(label: "store"))
    }

    /// A plain connection to the file, to look under the store.
    func rawDatabase() throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        return try DatabaseQueue(path: path, configuration: configuration)
    }

    func remove() { directory.remove() }
}

/// Another process's writer in the middle of a transaction: a connection to
/// the file at `path` that takes the write lock and holds it until
/// ``release()``.
struct HeldWriteLock {
    private let queue: DatabaseQueue

    init(path: String) async throws {
        var configuration = Configuration()
        // The transaction stays open between the calls.
        configuration.allowsUnsafeTransactions = true
        queue = try DatabaseQueue(path: path, configuration: configuration)
        try await queue.writeWithoutTransaction { db in try db.execute(sql: "BEGIN IMMEDIATE") }
    }

    func release() async throws {
        try await queue.writeWithoutTransaction { db in try db.execute(sql: "ROLLBACK") }
        try queue.close()
    }
}

@Suite("SQLite machine store")
struct SQLiteMachineStoreTests {
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

    static func machine(_ id: String, instanceID: String = "i-1") -> Machine {
        Machine(id: id, provider: "fake", credential: "main", instanceID: instanceID, agentStatus: .pending)
    }

    static func tables(_ database: DatabaseQueue) throws -> [String] {
        try database.read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        }
    }

    // MARK: File and schema

    @Test func migrationsCreateTheSchemaInWALMode() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        _ = try fixture.open()
        let database = try fixture.rawDatabase()
        let tables = try Self.tables(database)
        for table in ["machines", "credentials", "schedule", "events", "status_history"] { #expect(tables.contains(table)) }
        try await database.read { db in
            #expect(try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") == ["v1", "v2"])
            #expect(try String.fetchOne(db, sql: "PRAGMA journal_mode") == "wal")
            let columns = try db.columns(in: "machines").map(\.name)
            #expect(columns == [
                "id", "provider", "credential", "instance_id", "life", "manual", "agent_status", "status_state",
                "status_raw", "status_message", "status_updated_at", "interfaces", "poll_error",
                "agent_started_at", "agent_message", "status_seq",
            ])
            #expect(try db.columns(in: "events").map(\.name) == [
                "revision", "kind", "source", "machine_id", "credential", "at", "old_value", "new_value",
            ])
            #expect(try db.columns(in: "status_history").map(\.name) == ["machine_id", "seq", "state", "raw", "message", "at"])
            #expect(try db.columns(in: "schedule").map(\.name) == ["machine_id", "grp", "interval_ns", "due_ns"])
            #expect(try db.columns(in: "credentials").map(\.name) == [
                "provider", "name", "auth_type", "attributes", "expires_at", "invalid_reason",
            ])
        }
        // Opening again finds the schema current and changes nothing.
        _ = try fixture.open()
        #expect(try Self.tables(database) == tables)
    }

    @Test func theFileAndItsWALAreCreatedPrivate() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachine(Self.machine("m1"))
        #expect(try SocketFiles.mode(fixture.path) == 0o600)
        #expect(try SocketFiles.mode(fixture.path + "-wal") == 0o600)
        #expect(try SocketFiles.mode(fixture.path + "-shm") == 0o600)
    }

    @Test func aFileOthersCanReadIsRefused() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        #expect(FileManager.default.createFile(atPath: fixture.path, contents: nil, attributes: [.posixPermissions: 0o644]))
        let error = #expect(throws: StoreError.self) { try fixture.open() }
        #expect(error?.message.contains(fixture.path) == true)
        #expect(error?.message.contains("0644") == true)
        // Nothing was written into it.
        #expect(try FileManager.default.attributesOfItem(atPath: fixture.path)[.size] as? Int == 0)
    }

    @Test func aLinkInPlaceOfTheDatabaseOrItsWALIsNeverFollowed() async throws {
        for suffix in ["", "-wal", "-shm"] {
            let fixture = try StoreFixture()
            defer { fixture.remove() }
            let victim = fixture.directory.file("victim")
            #expect(FileManager.default.createFile(atPath: victim, contents: Data("keep".utf8), attributes: [.posixPermissions: 0o600]))
            #expect(symlink(victim, fixture.path + suffix) == 0)
            let error = #expect(throws: StoreError.self) { try fixture.open() }
            #expect(error?.message.contains("store \(fixture.path + suffix): is a symbolic link") == true, "\(String(describing: error))")
            #expect(FileManager.default.contents(atPath: victim) == Data("keep".utf8))
        }
    }

    @Test func aDirectoryOthersCanRenameFilesInIsRefused() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let shared = fixture.directory.file("shared")
        #expect(mkdir(shared, 0o777) == 0 && chmod(shared, 0o777) == 0)
        let path = "\(shared)/machines.db"
        let error = #expect(throws: StoreError.self) {
            try SQLiteMachineStore(path: path, clock: fixture.clock, logger: fixture.logs.logger())
        }
        #expect(error?.message == "store \(shared): directory has mode 0777: others can rename what it holds; chmod go-w it, or use a private directory")
        #expect(!FileManager.default.fileExists(atPath: path))
        // Sticky, as /tmp is: our own files there are ours to keep.
        chmod(shared, 0o1777)
        let store = try SQLiteMachineStore(path: path, clock: fixture.clock, logger: fixture.logs.logger())
        try store.close()
    }

    @Test func theDefaultStateDirectoryIsCreatedPrivate() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let path = fixture.directory.file("state/instancepoller/instancepoller.db")
        let store = try SQLiteMachineStore(path: path, createDirectory: true, clock: fixture.clock, logger: fixture.logs.logger())
        try await store.addMachine(Self.machine("m1"))
        try store.close()
        #expect(try SocketFiles.mode(fixture.directory.file("state/instancepoller")) == 0o700)
        #expect(try SocketFiles.mode(path) == 0o600)
        let reopened = try SQLiteMachineStore(path: path, createDirectory: true, clock: fixture.clock, logger: fixture.logs.logger())
        #expect(try await reopened.machines().map(\.id) == ["m1"])
        try reopened.close()
    }

    @Test func anInMemoryStoreWorks() async throws {
        let store = try SQLiteMachineStore.inMemory(clock: ManualPollClock(), logger: LogCapture().logger())
        try await store.addMachine(Self.machine("m1"))
        #expect(try await store.machines().map(\.id) == ["m1"])
        #expect(try await store.latestRevision() == 1)
    }

    // MARK: Machines

    @Test func machinesRoundTripEveryField() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        let stamped = InstanceStatusRecord(
            state: .provisioningError, rawStatus: "failed", message: "no capacity",
            updatedAt: Timestamp(nanosecondsSinceEpoch: 1_650_000_000_123_456_789))
        let full = Machine(
            id: "m-full", provider: "aws", credential: "prod", instanceID: "i-0abc", life: .dying, manual: true,
            agentStatus: .down, instanceStatus: stamped, interfaces: Self.interfaces, pollError: "throttled")
        let bare = Machine(id: "m-bare", provider: "aws", credential: "prod")
        try await store.addMachine(full)
        try await store.addMachine(bare)
        #expect(try await store.machine(id: "m-full") == full)
        #expect(try await store.machine(id: "m-bare") == bare)
        #expect(try await store.machine(id: "nope") == nil)
        #expect(try await store.machines() == [bare, full])
    }

    @Test func addUpdateRemoveLogExternalEventsInOrder() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        #expect(try await store.latestRevision() == 0)
        try await store.addMachine(Self.machine("m1"))
        fixture.clock.advance(by: .seconds(1))
        try await store.addMachine(Self.machine("m2", instanceID: ""))
        var m2 = Self.machine("m2", instanceID: "i-2")
        try await store.updateMachine(m2)
        m2.life = .dead
        try await store.updateMachine(m2)
        try await store.removeMachine(id: "m1")

        let events = try await store.events(after: 0, limit: 100)
        #expect(events.map(\.kind) == [.machineAdded, .machineAdded, .machineChanged, .machineChanged, .machineRemoved])
        #expect(events.map(\.machineID) == ["m1", "m2", "m2", "m2", "m1"])
        #expect(events.allSatisfy { $0.source == .external && $0.credential.isEmpty })
        #expect(zip(events, events.dropFirst()).allSatisfy { $0.revision < $1.revision })
        #expect(events[0].at == Timestamp(nanosecondsSinceEpoch: 1_700_000_000_000_000_000))
        #expect(events[1].at == events[0].at + .seconds(1))
        #expect(try await store.latestRevision() == events.last?.revision)
        #expect(try await store.machine(id: "m2")?.life == .dead)
        #expect(try await store.machine(id: "m1") == nil)

        // Paging: after and limit.
        #expect(try await store.events(after: events[1].revision, limit: 2) == Array(events[2...3]))
        #expect(try await store.events(after: events[4].revision, limit: 10).isEmpty)
    }

    @Test func everyRelevantFieldCountsAsAChange() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        let base = Self.machine("m1")
        try await store.addMachine(base)
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

    @Test func anUpdateWithNoRelevantChangeLogsNothing() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachine(Self.machine("m1"))
        let revision = try await store.latestRevision()
        try await store.updateMachine(Self.machine("m1"))
        // The polled truth is the poller's: an update neither writes nor logs it.
        var polled = Self.machine("m1")
        polled.instanceStatus = Self.running
        polled.interfaces = Self.interfaces
        polled.pollError = "boom"
        try await store.updateMachine(polled)
        #expect(try await store.latestRevision() == revision)
        #expect(try await store.machine(id: "m1") == Self.machine("m1"))
    }

    @Test func mistakesAreStoreErrorsNamingWhat() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachine(Self.machine("m-dup"))
        let revision = try await store.latestRevision()

        let duplicate = await #expect(throws: StoreError.self) { try await store.addMachine(Self.machine("m-dup")) }
        #expect(duplicate == StoreError(.alreadyExists, "machine \"m-dup\" already exists"))
        let unknown = await #expect(throws: StoreError.self) { try await store.updateMachine(Self.machine("m-ghost")) }
        #expect(unknown?.message.contains("m-ghost") == true)
        #expect(unknown?.kind == .notFound)
        let removed = await #expect(throws: StoreError.self) { try await store.removeMachine(id: "m-gone") }
        #expect(removed?.message.contains("m-gone") == true)
        #expect(removed?.kind == .notFound)
        let status = await #expect(throws: StoreError.self) {
            try await store.setInstanceStatus(machineID: "m-none", Self.running)
        }
        #expect(status?.message.contains("m-none") == true)
        #expect(status?.kind == .notFound)
        let credential = await #expect(throws: StoreError.self) {
            try await store.invalidateCredential(provider: "aws", name: "nope", reason: "x")
        }
        #expect(credential?.message.contains("aws/nope") == true)
        #expect(credential?.kind == .notFound)
        // A failed change logs nothing.
        #expect(try await store.latestRevision() == revision)
    }

    @Test func aWriterHoldingTheLockPastTheBusyTimeoutMakesAWriteUnavailable() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try SQLiteMachineStore(path: fixture.path, busyTimeout: .milliseconds(50), clock: fixture.clock, logger: fixture.logs.logger())
        let lock = try await HeldWriteLock(path: fixture.path)

        let busy = try #require(await #expect(throws: StoreError.self) { try await store.addMachine(Self.machine("m1")) })
        #expect(busy.kind == .unavailable)
        #expect(busy.message.hasPrefix("adding machine m1 in \(fixture.path): "), "\(busy)")
        #expect(busy.message.contains("database is locked"), "\(busy)")
        let rpc = RPCError(from: busy)
        #expect(rpc.code == .unavailable && rpc.code.isRetryable)

        try await lock.release()
        try await store.addMachine(Self.machine("m1"))
        #expect(try await store.machine(id: "m1") == Self.machine("m1"), "once the lock is free, the same write passes")
    }

    // MARK: Polled truth

    @Test func applyPollWritesStatusAndInterfacesOnlyWhenChanged() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachine(Self.machine("m1"))
        let afterAdd = try await store.latestRevision()
        fixture.clock.advance(by: .seconds(5))
        let firstWrite = fixture.clock.now

        let result = PollResult(machineID: "m1", instanceStatus: Self.running, interfaces: Self.interfaces)
        let returned = try await store.applyPoll([result], schedule: [])
        let polled = try await store.events(after: afterAdd, limit: 10)
        #expect(returned == polled, "it returns the events it logged")
        #expect(polled.map(\.kind) == [.instanceStatusChanged, .addressesChanged])
        #expect(polled.map(\.source) == [.poller, .poller])
        #expect(polled.map(\.machineID) == ["m1", "m1"])
        #expect(polled.map { [$0.oldValue, $0.newValue] } == [["unspecified", "running"], ["", "10.0.1.5,203.0.113.7"]])
        var stored = try #require(try await store.machine(id: "m1"))
        #expect(stored.instanceStatus == InstanceStatusRecord(state: .running, rawStatus: "running", updatedAt: firstWrite))
        #expect(stored.interfaces == Self.interfaces)

        // The same again, later, even with another time on the record: nothing written.
        fixture.clock.advance(by: .seconds(5))
        var again = result
        again.instanceStatus?.updatedAt = fixture.clock.now
        try await store.applyPoll([again], schedule: [])
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
        try await store.applyPoll([PollResult(machineID: "m1", interfaces: [Self.interfaces[1]])], schedule: [])
        #expect(try await store.machine(id: "m1")?.interfaces == [Self.interfaces[1]])
        try await store.applyPoll([PollResult(machineID: "m1", interfaces: [])], schedule: [])
        #expect(try await store.machine(id: "m1")?.interfaces == [])
        let later = try await store.events(after: polled[1].revision, limit: 10)
        #expect(later.map(\.kind) == [.instanceStatusChanged, .addressesChanged, .machinePolled], "the last change kept the addresses (none)")
        #expect(later.map { [$0.oldValue, $0.newValue] } == [
            ["running", "running: scheduled stop"], ["10.0.1.5,203.0.113.7", ""], ["", ""],
        ])
        #expect(try await store.statusHistory(machineID: "m1").map(\.summary) == ["running: scheduled stop", "running"])
    }

    @Test func manyMachinesAreAddedAllOrNone() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachines([Self.machine("m1"), Self.machine("m2")])
        await #expect(throws: StoreError(.alreadyExists, "machine \"m1\" already exists")) {
            try await store.addMachines([Self.machine("m3"), Self.machine("m1")])
        }
        #expect(try await store.machines().map(\.id).sorted() == ["m1", "m2"], "m3 rolled back with the rest")
        #expect(try await store.events(after: 0, limit: 10).map(\.kind) == [.machineAdded, .machineAdded])
    }

    @Test func pollErrorsThatAppearOrClearAreLoggedOnce() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachine(Self.machine("m1"))
        let revision = try await store.latestRevision()
        try await store.applyPoll([PollResult(machineID: "m1", pollError: "credential invalid: revoked")], schedule: [])
        #expect(try await store.machine(id: "m1")?.pollError == "credential invalid: revoked")
        try await store.applyPoll([PollResult(machineID: "m1", pollError: "credential invalid: revoked")], schedule: [])
        try await store.applyPoll([PollResult(machineID: "m1")], schedule: [])
        #expect(try await store.machine(id: "m1")?.pollError == nil)
        let events = try await store.events(after: revision, limit: 10)
        #expect(events.map(\.kind) == [.machinePolled, .machinePolled], "set, then cleared; the repeat is not news")
        #expect(events.allSatisfy { $0.source == .poller }, "the poller's own writes: they do not wake it")
    }

    @Test func aBatchOf500IsOneTransactionAndSkipsRemovedMachines() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        let ids = (0..<500).map { "m-\($0)" }
        for id in ids { try await store.addMachine(Self.machine(id, instanceID: "i-\(id)")) }
        try await store.removeMachine(id: "m-42")
        let before = try await store.latestRevision()
        let now = fixture.clock.now
        let results = ids.map { PollResult(machineID: $0, instanceStatus: Self.running, interfaces: Self.interfaces) }
        let schedule = ids.map { ScheduleEntry(machineID: $0, group: .long, interval: .seconds(900), due: now + .seconds(900)) }

        // A failure part-way through the batch leaves nothing of it behind.
        let database = try fixture.rawDatabase()
        try await database.write { db in
            try db.execute(sql: """
                CREATE TRIGGER fail_m_400 BEFORE UPDATE ON machines WHEN NEW.id = 'm-400'
                BEGIN SELECT RAISE(ABORT, 'injected failure'); END
                """)
        }
        let failure = await #expect(throws: StoreError.self) { try await store.applyPoll(results, schedule: schedule) }
        #expect(failure?.message.contains("injected failure") == true)
        #expect(try await store.latestRevision() == before)
        #expect(try await store.machine(id: "m-0")?.instanceStatus.state == .unspecified)
        #expect(try await store.schedule().isEmpty)
        try await database.write { db in try db.execute(sql: "DROP TRIGGER fail_m_400") }

        try await store.applyPoll(results, schedule: schedule)
        let events = try await store.events(after: before, limit: 1000)
        let expected = ids.filter { $0 != "m-42" }
        #expect(events.map(\.machineID) == expected.flatMap { [$0, $0] })
        #expect(events.map(\.kind) == expected.flatMap { _ in [MachineEvent.Kind.instanceStatusChanged, .addressesChanged] })
        #expect(events.allSatisfy { $0.source == .poller })
        #expect(events.map(\.revision) == Array((before + 1)...(before + 998)))
        let machines = try await store.machines()
        #expect(machines.count == 499)
        #expect(machines.allSatisfy { $0.instanceStatus.state == .running && $0.interfaces == Self.interfaces })
        #expect(try await store.schedule().map(\.machineID) == expected.sorted())
    }

    @Test func setInstanceStatusWritesAndLogsAPollerEvent() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        var manual = Self.machine("m-manual")
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

    @Test func externalEventsLeaveThePollersOwnOutAndSayHowFarTheLogWasRead() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachines([Self.machine("m1"), Self.machine("m2"), Self.machine("m3")])  // 1, 2, 3
        try await store.applyPoll([PollResult(machineID: "m1", instanceStatus: Self.running)], schedule: [])  // 4
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
    }

    @Test func theStatusHistoryKeepsTheLastTwentyNewestFirstAndGoesWithTheMachine() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachines([Self.machine("m1"), Self.machine("m2")])
        for index in 1...25 {
            fixture.clock.advance(by: .seconds(1))
            let status = InstanceStatusRecord(state: .running, rawStatus: "running", message: "change \(index)")
            try await store.applyPoll([PollResult(machineID: "m1", instanceStatus: status), PollResult(machineID: "m2", instanceStatus: status)], schedule: [])
        }
        let history = try await store.statusHistory(machineID: "m1")
        #expect(history.map(\.message) == (6...25).reversed().map { "change \($0)" })
        #expect(history.first?.updatedAt == fixture.clock.now)
        try await store.removeMachine(id: "m1")
        #expect(try await store.statusHistory(machineID: "m1").isEmpty)
        #expect(try await store.statusHistory(machineID: "m2").count == 20)
        let rows = try await fixture.rawDatabase().read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM status_history") }
        #expect(rows == 20, "trimmed in the store, not only when read")
    }

    @Test func everyAgentStartIsRecordedAndOtherReportsAreNot() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachine(Self.machine("m1"))
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
        await #expect(throws: StoreError.self) { try await store.reportAgentStatus(machineID: "m-ghost", .started) }

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
        var added = Self.machine("m2")
        added.agentStatus = .started
        try await store.addMachine(added)
        #expect(try await store.machine(id: "m2")?.agentStartedAt == fixture.clock.now)
    }

    @Test func aProvisioningErrorSetsTheAgentInErrorOnceWithAnEvent() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachine(Self.machine("m1"))
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

    // MARK: Schedule

    @Test func scheduleRoundTripsAndFollowsItsMachines() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        for id in ["m1", "m2", "m3"] { try await store.addMachine(Self.machine(id)) }
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

        // Applying a poll saves its schedule too.
        let long = ScheduleEntry(machineID: "m3", group: .long, interval: .seconds(900), due: t0 + .seconds(950))
        try await store.applyPoll([], schedule: [long])
        #expect(try await store.schedule() == [entries[1], long])
        #expect(try await store.latestRevision() == revision)

        try await store.removeMachine(id: "m3")
        #expect(try await store.schedule() == [entries[1]])
    }

    // MARK: Credentials

    @Test func credentialsSetGetListInvalidateAndSetAgain() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
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

    @Test func credentialSecretsAreNeverShownOrLogged() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
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

    // MARK: Restart

    @Test func everythingSurvivesReopening() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let t0 = fixture.clock.now
        let credential = StoredCredential(provider: "aws", name: "main", authType: "access-key", attributes: ["k": "v"])
        let entry = ScheduleEntry(machineID: "m1", group: .long, interval: .seconds(900), due: t0 + .seconds(870))
        let (machine, revision): (Machine?, Int64)
        do {
            let store = try fixture.open()
            try await store.addMachine(Self.machine("m1"))
            try await store.applyPoll(
                [PollResult(machineID: "m1", instanceStatus: Self.running, interfaces: Self.interfaces, pollError: "slow")],
                schedule: [entry])
            try await store.setCredential(credential)
            machine = try await store.machine(id: "m1")
            revision = try await store.latestRevision()
        }
        let reopened = try fixture.open()
        #expect(try await reopened.machine(id: "m1") == machine)
        #expect(try await reopened.machine(id: "m1")?.pollError == "slow")
        #expect(try await reopened.schedule() == [entry])
        #expect(try await reopened.credentials() == [credential])
        #expect(try await reopened.latestRevision() == revision)
        try await reopened.addMachine(Self.machine("m2"))
        #expect(try await reopened.latestRevision() == revision + 1)
    }
}
