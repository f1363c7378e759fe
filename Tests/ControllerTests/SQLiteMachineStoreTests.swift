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

/// What only the SQLite store has: its file, its modes, its locks. The
/// behaviour both stores share is in MachineStoreTests.
@Suite("SQLite machine store")
struct SQLiteMachineStoreTests {
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

    // MARK: Locks and leases

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

    @Test func aFenceIsRefusedForTheFileHasNoLeases() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let store = try fixture.open()
        try await store.addMachine(Self.machine("m1"))
        let fence = LeaseFence(key: CredentialKey(provider: "fake", name: "main"), holder: "c1", epoch: 1)
        let refused = try #require(await #expect(throws: StoreError.self) {
            try await store.applyPoll([PollResult(machineID: "m1", instanceStatus: Self.running)], schedule: [], fence: fence)
        })
        #expect(refused.kind == .failedPrecondition)
        #expect(try await store.latestRevision() == 1, "nothing written")
    }
}
