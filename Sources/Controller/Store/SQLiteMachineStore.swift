public import Core
public import Logging
internal import Foundation
internal import GRDB
internal import SwiftProtobuf
internal import Synchronization

/// The embedded machine store: one SQLite file in WAL mode, through GRDB
/// (SPEC §6.1).
///
/// Each change and its entry in the events log are written in one
/// transaction, begun IMMEDIATE so that writers never interleave: revisions
/// then increase monotonically even when several processes write the same
/// file. Changes made by another process reach this one through the events
/// log (``MachineWatcher``).
///
/// The file holds credentials: it is created 0600, and one that group or
/// others can access is refused.
public final class SQLiteMachineStore: MachineStore {
    /// The database file, or ":memory:".
    public let path: String
    let writer: any DatabaseWriter
    let clock: any PollClock
    let logger: Logger
    private let changeHandler = Mutex<(@Sendable () -> Void)?>(nil)

    /// Opens (creating it if needed) the database at `path` and brings its
    /// schema up to date. `createDirectory`: its directory is created
    /// private (0700) when missing, as the default state directory is.
    public convenience init(path: String, createDirectory: Bool = false, clock: any PollClock, logger: Logger) throws {
        try Self.prepareFile(path, createDirectory: createDirectory)
        var configuration = Configuration()
        // Another process may hold the write lock for a moment.
        configuration.busyMode = .timeout(10)
        // Memory: at most two pooled readers, and a 2 MiB page cache per
        // connection (SQLite's default is 8 MiB each); the OS page cache
        // keeps the file hot anyway.
        configuration.maximumReaderCount = 2
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA cache_size = -2048") }
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw StoreError("cannot open database \(path): \(error)")
        }
        try self.init(writer: pool, path: path, clock: clock, logger: logger)
    }

    /// A private in-memory store, gone when released; for tests and
    /// throwaway runs.
    public static func inMemory(clock: any PollClock, logger: Logger) throws -> SQLiteMachineStore {
        let queue: DatabaseQueue
        do {
            queue = try DatabaseQueue()
        } catch {
            throw StoreError("cannot open an in-memory database: \(error)")
        }
        return try SQLiteMachineStore(writer: queue, path: ":memory:", clock: clock, logger: logger)
    }

    private init(writer: any DatabaseWriter, path: String, clock: any PollClock, logger: Logger) throws {
        self.writer = writer
        self.path = path
        self.clock = clock
        self.logger = logger
        do {
            try Self.migrator.migrate(writer)
        } catch {
            throw StoreError("cannot migrate database \(path): \(error)")
        }
        logger.debug("machine store opened", metadata: ["path": "\(path)"])
    }

    /// Called after every committed change that appended to the events log,
    /// e.g. to nudge a ``MachineWatcher`` so that this process's own changes
    /// are seen at once. Changes from other processes are not reported here.
    public func setChangeHandler(_ handler: (@Sendable () -> Void)?) {
        changeHandler.withLock { $0 = handler }
    }

    /// Closes the database (checkpointing the WAL). Later calls fail.
    public func close() throws {
        do {
            try writer.close()
        } catch {
            throw StoreError("cannot close database \(path): \(error)")
        }
        logger.debug("machine store closed", metadata: ["path": "\(path)"])
    }

    // MARK: Machines

    public func addMachine(_ machine: Machine) async throws {
        try await addMachines([machine])
    }

    /// Adds machines in one transaction (all or none), each logged as added.
    public func addMachines(_ machines: [Machine]) async throws {
        try await importMachines(machines, update: false)
    }

    @discardableResult
    public func importMachines(_ machines: [Machine], update: Bool) async throws -> ImportCounts {
        guard !machines.isEmpty else { return ImportCounts() }
        let now = clock.now
        let encoded = try machines.map { ($0, try Self.encode(interfaces: $0.interfaces, machineID: $0.id)) }
        let what = machines.count == 1 ? "adding machine \(machines[0].id)" : "adding \(machines.count) machines"
        let counts = try await write(what) { db -> ImportCounts in
            var counts = ImportCounts()
            for (machine, interfaces) in encoded {
                if try Self.exists(db, machineID: machine.id) {
                    guard update else { throw StoreError("machine \(machine.id) already exists") }
                    if try Self.update(db, machine, keepingLife: true, at: now) {
                        counts.updated += 1
                    } else {
                        counts.unchanged += 1
                    }
                    continue
                }
                try Self.insert(db, machine, interfaces: interfaces, at: now)
                counts.added += 1
            }
            return counts
        }
        logger.debug("machines imported", metadata: ["added": "\(counts.added)", "updated": "\(counts.updated)"])
        if counts.added + counts.updated > 0 { didChange() }
        return counts
    }

    /// Inserts a new machine and logs it as added.
    private static func insert(_ db: Database, _ machine: Machine, interfaces: Data?, at now: Timestamp) throws {
        let insert = try db.cachedStatement(sql: """
            INSERT INTO machines (id, provider, credential, instance_id, life, manual, agent_status,
                agent_message, agent_started_at,
                status_state, status_raw, status_message, status_updated_at, interfaces, poll_error)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        let status = machine.instanceStatus
        // A machine whose agent is started when added: that is its start.
        let agentStarted = machine.agentStartedAt ?? (machine.agentStatus == .started ? now : nil)
        try insert.execute(arguments: [
            machine.id, machine.provider, machine.credential, machine.instanceID, machine.life.rawValue,
            machine.manual, machine.agentStatus.rawValue, machine.agentMessage, agentStarted?.nanosecondsSinceEpoch,
            status.state.rawValue, status.rawStatus, status.message, status.updatedAt?.nanosecondsSinceEpoch,
            interfaces, machine.pollError,
        ])
        try appendEvent(db, .machineAdded, .external, machineID: machine.id, at: now)
    }

    public func updateMachine(_ machine: Machine) async throws {
        let now = clock.now
        let changed = try await write("updating machine \(machine.id)") { db -> Bool in
            try Self.update(db, machine, keepingLife: false, at: now)
        }
        guard changed else { return }
        logger.debug("machine changed", metadata: ["machine": "\(machine.id)"])
        didChange()
    }

    /// Writes what an update may change (the life too, unless
    /// `keepingLife`) and logs the machine as changed; false when all of it
    /// already was so.
    private static func update(_ db: Database, _ machine: Machine, keepingLife: Bool, at now: Timestamp) throws -> Bool {
        guard
            let row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT provider, credential, instance_id, life, manual, agent_status FROM machines WHERE id = ?"),
                arguments: [machine.id])
        else {
            throw StoreError("machine \(machine.id) does not exist")
        }
        let agentBefore: String = try row.decode(forColumn: "agent_status")
        let lifeBefore: String = try row.decode(forColumn: "life")
        let life = keepingLife ? lifeBefore : machine.life.rawValue
        let unchanged =
            try row.decode(String.self, forColumn: "provider") == machine.provider
            && row.decode(String.self, forColumn: "credential") == machine.credential
            && row.decode(String.self, forColumn: "instance_id") == machine.instanceID
            && lifeBefore == life
            && row.decode(Bool.self, forColumn: "manual") == machine.manual
            && agentBefore == machine.agentStatus.rawValue
        if unchanged { return false }
        try db.cachedStatement(sql: """
            UPDATE machines SET provider = ?, credential = ?, instance_id = ?, life = ?, manual = ?
            WHERE id = ?
            """
        ).execute(arguments: [machine.provider, machine.credential, machine.instanceID, life, machine.manual, machine.id])
        if agentBefore != machine.agentStatus.rawValue {
            try writeAgentStatus(db, machine.agentStatus, machineID: machine.id, at: now)
        }
        try appendEvent(db, .machineChanged, .external, machineID: machine.id, at: now)
        return true
    }

    @discardableResult
    public func reportAgentStatus(machineID: String, _ status: Machine.AgentStatus) async throws -> Machine {
        let now = clock.now
        let (machine, changed) = try await write("setting the agent status of machine \(machineID)") { db -> (Machine, Bool) in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM machines WHERE id = ?", arguments: [machineID]) else {
                throw StoreError("machine \(machineID) does not exist")
            }
            let before = try Self.machine(from: row)
            // A repeated `started` is news: the agent started again.
            guard status == .started || before.agentStatus != status || !before.agentMessage.isEmpty else { return (before, false) }
            try Self.writeAgentStatus(db, status, machineID: machineID, at: now)
            try Self.appendEvent(db, .machineChanged, .external, machineID: machineID, at: now)
            var after = before
            after.agentStatus = status
            after.agentMessage = ""
            if status == .started { after.agentStartedAt = now }
            return (after, true)
        }
        if changed {
            logger.debug("agent status reported", metadata: ["machine": "\(machineID)", "status": "\(status.rawValue)"])
            didChange()
        }
        return machine
    }

    public func removeMachine(id: String) async throws {
        try await removeMachines(ids: [id])
    }

    public func removeMachines(ids: [String]) async throws {
        guard !ids.isEmpty else { return }
        let now = clock.now
        let what = ids.count == 1 ? "removing machine \(ids[0])" : "removing \(ids.count) machines"
        try await write(what) { db in
            for id in ids {
                try db.cachedStatement(sql: "DELETE FROM machines WHERE id = ?").execute(arguments: [id])
                if db.changesCount == 0 { throw StoreError("machine \(id) does not exist") }
                try db.cachedStatement(sql: "DELETE FROM schedule WHERE machine_id = ?").execute(arguments: [id])
                try db.cachedStatement(sql: "DELETE FROM status_history WHERE machine_id = ?").execute(arguments: [id])
                try Self.appendEvent(db, .machineRemoved, .external, machineID: id, at: now)
            }
        }
        logger.debug("machines removed", metadata: ["count": "\(ids.count)"])
        didChange()
    }

    public func machine(id: String) async throws -> Machine? {
        try await read("reading machine \(id)") { db in
            try Row.fetchOne(db, sql: "SELECT * FROM machines WHERE id = ?", arguments: [id]).map(Self.machine(from:))
        }
    }

    public func machines() async throws -> [Machine] {
        try await read("reading machines") { db in
            try Self.all(db, "SELECT * FROM machines ORDER BY id", Self.machine(from:))
        }
    }

    // MARK: Polled truth

    @discardableResult
    public func applyPoll(_ results: [PollResult], schedule: [ScheduleEntry]) async throws -> [MachineEvent] {
        let now = clock.now
        let events = try await write("applying a poll of \(results.count) machines") { db -> [MachineEvent] in
            // A batch is read, logged and scheduled with a statement per
            // few hundred machines, not one per machine: this runs for every
            // batch of every sweep.
            let rows = try Self.pollRows(db, ids: results.map(\.machineID))
            let update = try db.cachedStatement(sql: """
                UPDATE machines SET status_state = ?, status_raw = ?, status_message = ?, status_updated_at = ?,
                    interfaces = ?, poll_error = ?, status_seq = ?
                WHERE id = ?
                """)
            var events: [MachineEvent] = []
            var history = HistoryWrites()
            func log(_ kind: MachineEvent.Kind, _ id: String, _ old: String, _ new: String) {
                events.append(MachineEvent(revision: 0, kind: kind, source: .poller, machineID: id, at: now, oldValue: old, newValue: new))
            }
            for result in results {
                // Removed since the poll began: nothing to write.
                guard let row = rows[result.machineID] else { continue }
                let id = result.machineID
                var status = try Self.status(at: 1, of: row)
                var interfaces: Data? = try row.decode(atIndex: 5)
                let pollError: String? = try row.decode(atIndex: 6)
                var statusSeq: Int64 = try row.decode(atIndex: 7)
                var changed = false
                var polled: (old: String, new: String)?
                if var new = result.instanceStatus, !new.sameReport(as: status) {
                    new.updatedAt = now
                    statusSeq = history.add(new, machineID: id, after: statusSeq)
                    log(.instanceStatusChanged, id, status.summary, new.summary)
                    status = new
                    changed = true
                }
                if let new = result.interfaces {
                    let before = try Self.interfaces(interfaces, machineID: id)
                    if new != before {
                        interfaces = try Self.encode(interfaces: new, machineID: id)
                        let (old, newList) = (Self.addressList(before), Self.addressList(new))
                        if old != newList {
                            log(.addressesChanged, id, old, newList)
                        } else {
                            polled = ("", "")
                        }
                        changed = true
                    }
                }
                if pollError != result.pollError {
                    // An error that appears or clears is news for watchers too.
                    polled = (pollError ?? "", result.pollError ?? "")
                    changed = true
                }
                if let polled { log(.machinePolled, id, polled.old, polled.new) }
                if changed {
                    try update.execute(arguments: [
                        status.state.rawValue, status.rawStatus, status.message, status.updatedAt?.nanosecondsSinceEpoch,
                        interfaces, result.pollError, statusSeq, id,
                    ])
                }
                if let message = result.agentError {
                    let agentBefore: String = try row.decode(atIndex: 8)
                    let messageBefore: String = try row.decode(atIndex: 9)
                    if agentBefore != Machine.AgentStatus.error.rawValue || messageBefore != message {
                        try db.cachedStatement(sql: "UPDATE machines SET agent_status = ?, agent_message = ? WHERE id = ?").execute(
                            arguments: [Machine.AgentStatus.error.rawValue, message, id])
                        log(.agentStatusChanged, id, Self.agentText(agentBefore, messageBefore), Self.agentText("error", message))
                    }
                }
            }
            try history.write(db)
            // One multi-row insert takes consecutive revisions.
            let last = try Self.insert(db, into: "events (kind, source, machine_id, credential, at, old_value, new_value)", events.map {
                [$0.kind.rawValue, $0.source.rawValue, $0.machineID, "", now.nanosecondsSinceEpoch, $0.oldValue, $0.newValue] as [(any DatabaseValueConvertible)?]
            })
            for index in events.indices { events[index].revision = last - Int64(events.count - 1 - index) }
            try Self.upsert(db, schedule: schedule)
            return events
        }
        logger.debug(
            "poll applied",
            metadata: ["results": "\(results.count)", "events": "\(events.count)", "schedule": "\(schedule.count)"])
        if !events.isEmpty { didChange() }
        return events
    }

    public func setInstanceStatus(machineID: String, _ status: InstanceStatusRecord) async throws {
        let now = clock.now
        try await write("setting the instance status of machine \(machineID)") { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM machines WHERE id = ?", arguments: [machineID]) else {
                throw StoreError("machine \(machineID) does not exist")
            }
            let before = try Self.status(from: row)
            var written = status
            written.updatedAt = now
            var history = HistoryWrites()
            let seq = history.add(written, machineID: machineID, after: try row.decode(forColumn: "status_seq"))
            try history.write(db)
            try db.execute(
                sql: """
                    UPDATE machines SET status_state = ?, status_raw = ?, status_message = ?, status_updated_at = ?, status_seq = ?
                    WHERE id = ?
                    """,
                arguments: [written.state.rawValue, written.rawStatus, written.message, now.nanosecondsSinceEpoch, seq, machineID])
            try Self.appendEvent(db, .instanceStatusChanged, .poller, machineID: machineID, at: now, old: before.summary, new: written.summary)
        }
        logger.debug("instance status set", metadata: ["machine": "\(machineID)", "state": "\(status.state.label)"])
        didChange()
    }

    public func statusHistory(machineID: String) async throws -> [InstanceStatusRecord] {
        try await read("reading the status history of machine \(machineID)") { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM status_history WHERE machine_id = ? ORDER BY seq DESC LIMIT ?",
                arguments: [machineID, statusHistoryLimit]
            ).map { row in
                InstanceStatusRecord(
                    state: ProviderV1.InstanceState(rawValue: try row.decode(Int.self, forColumn: "state")) ?? .unspecified,
                    rawStatus: try row.decode(forColumn: "raw"),
                    message: try row.decode(forColumn: "message"),
                    updatedAt: Timestamp(nanosecondsSinceEpoch: try row.decode(forColumn: "at")))
            }
        }
    }

    // MARK: Schedule

    public func schedule() async throws -> [ScheduleEntry] {
        try await read("reading the schedule") { db in
            try Self.all(db, "SELECT * FROM schedule ORDER BY machine_id", Self.scheduleEntry(from:))
        }
    }

    /// Entries for machines that are not in the store are skipped, so that a
    /// machine removed meanwhile does not leave a schedule row behind.
    public func saveSchedule(_ entries: [ScheduleEntry], removing: [String]) async throws {
        try await write("saving the schedule") { db in
            let delete = try db.cachedStatement(sql: "DELETE FROM schedule WHERE machine_id = ?")
            for id in removing { try delete.execute(arguments: [id]) }
            try Self.upsert(db, schedule: entries)
        }
    }

    // MARK: Events

    public func events(after revision: Int64, limit: Int) async throws -> [MachineEvent] {
        guard limit > 0 else { return [] }
        return try await read("reading events after revision \(revision)") { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM events WHERE revision > ? ORDER BY revision LIMIT ?",
                arguments: [revision, limit]
            ).map(Self.event(from:))
        }
    }

    public func externalEvents(after revision: Int64, limit: Int) async throws -> ExternalEvents {
        guard limit > 0 else { return ExternalEvents(events: [], through: revision) }
        return try await read("reading events after revision \(revision)") { db in
            // One snapshot: the latest revision read here is what the events were looked for up to.
            let latest = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(revision), 0) FROM events") ?? 0
            let events = try Self.all(
                db, "SELECT * FROM events WHERE revision > ? AND revision <= ? AND source = ? ORDER BY revision LIMIT ?",
                arguments: [revision, latest, MachineEvent.Source.external.rawValue, limit], Self.event(from:))
            let through = events.count == limit ? events[events.count - 1].revision : max(latest, revision)
            return ExternalEvents(events: events, through: through)
        }
    }

    public func latestRevision() async throws -> Int64 {
        try await read("reading the latest revision") { db in
            try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(revision), 0) FROM events") ?? 0
        }
    }

    // MARK: Credentials

    public func credential(provider: String, name: String) async throws -> StoredCredential? {
        try await read("reading credential \(provider)/\(name)") { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM credentials WHERE provider = ? AND name = ?", arguments: [provider, name]
            ).map(Self.credential(from:))
        }
    }

    public func credentials() async throws -> [StoredCredential] {
        try await read("reading credentials") { db in
            try Row.fetchAll(db, sql: "SELECT * FROM credentials ORDER BY provider, name").map(Self.credential(from:))
        }
    }

    public func setCredential(_ credential: StoredCredential) async throws {
        let now = clock.now
        let label = "\(credential.provider)/\(credential.name)"
        let attributes = try Self.encode(attributes: credential.attributes, credential: label)
        try await write("setting credential \(label)") { db in
            try db.execute(
                sql: """
                    INSERT INTO credentials (provider, name, auth_type, attributes, expires_at, invalid_reason)
                    VALUES (?, ?, ?, ?, ?, NULL)
                    ON CONFLICT (provider, name) DO UPDATE SET
                        auth_type = excluded.auth_type, attributes = excluded.attributes,
                        expires_at = excluded.expires_at, invalid_reason = NULL
                    """,
                arguments: [
                    credential.provider, credential.name, credential.authType, attributes,
                    credential.expiresAt?.nanosecondsSinceEpoch,
                ])
            try Self.appendEvent(db, .credentialSet, .external, credential: label, at: now)
        }
        logger.debug("credential set", metadata: ["credential": "\(label)"])
        didChange()
    }

    public func invalidateCredential(provider: String, name: String, reason: String) async throws {
        let now = clock.now
        let label = "\(provider)/\(name)"
        try await write("invalidating credential \(label)") { db in
            try db.execute(
                sql: "UPDATE credentials SET invalid_reason = ? WHERE provider = ? AND name = ?",
                arguments: [reason, provider, name])
            if db.changesCount == 0 { throw StoreError("credential \(label) does not exist") }
            try Self.appendEvent(db, .credentialInvalidated, .poller, credential: label, at: now)
        }
        logger.debug("credential invalidated", metadata: ["credential": "\(label)", "reason": "\(reason)"])
        didChange()
    }

    @discardableResult
    public func clearCredentialInvalid(provider: String, name: String, source: MachineEvent.Source) async throws -> Bool {
        let now = clock.now
        let label = "\(provider)/\(name)"
        let cleared = try await write("clearing the invalid mark of credential \(label)") { db -> Bool in
            guard let row = try Row.fetchOne(
                db, sql: "SELECT invalid_reason FROM credentials WHERE provider = ? AND name = ?", arguments: [provider, name])
            else {
                throw StoreError("credential \(label) does not exist")
            }
            guard let reason = try row.decode(String?.self, forColumn: "invalid_reason") else { return false }
            try db.execute(
                sql: "UPDATE credentials SET invalid_reason = NULL WHERE provider = ? AND name = ?", arguments: [provider, name])
            try Self.appendEvent(db, .credentialValidated, source, credential: label, at: now, old: reason)
            return true
        }
        if cleared {
            logger.debug("credential invalid mark cleared", metadata: ["credential": "\(label)"])
            didChange()
        }
        return cleared
    }

    public func removeCredential(provider: String, name: String) async throws {
        let now = clock.now
        let label = "\(provider)/\(name)"
        try await write("removing credential \(label)") { db in
            try db.execute(sql: "DELETE FROM credentials WHERE provider = ? AND name = ?", arguments: [provider, name])
            if db.changesCount == 0 { throw StoreError("credential \(label) does not exist") }
            let users = try Int.fetchOne(
                db, sql: "SELECT count(*) FROM machines WHERE provider = ? AND credential = ?", arguments: [provider, name]) ?? 0
            try Self.appendEvent(db, .credentialRemoved, .external, credential: label, at: now, new: users == 0 ? "" : "\(users) machines")
        }
        logger.debug("credential removed", metadata: ["credential": "\(label)"])
        didChange()
    }

    // MARK: Access

    /// One write transaction; any failure but our own StoreError (or a
    /// cancellation) becomes a StoreError saying what was being done.
    func write<T: Sendable>(_ what: String, _ body: @Sendable (Database) throws -> T) async throws -> T {
        try await explained(what) { try await writer.write(body) }
    }

    func read<T: Sendable>(_ what: String, _ body: @Sendable (Database) throws -> T) async throws -> T {
        try await explained(what) { try await writer.read(body) }
    }

    private func explained<T>(_ what: String, _ operation: () async throws -> T) async throws -> T {
        do {
            return try await operation()
        } catch let error as StoreError {
            throw error
        } catch let error as CancellationError {
            throw error
        } catch {
            throw StoreError("\(what) in \(path): \(error)")
        }
    }

    func didChange() {
        changeHandler.withLock { $0 }?()
    }
}

// MARK: - Rows

extension SQLiteMachineStore {
    /// Every row of `sql` made into a value as it is read: a fleet's rows
    /// are never all held at once (100 000 machine rows are tens of MB).
    static func all<T>(_ db: Database, _ sql: String, arguments: StatementArguments = [], _ make: (Row) throws -> T) throws -> [T] {
        var values: [T] = []
        let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
        while let row = try rows.next() { values.append(try make(row)) }
        return values
    }

    static func exists(_ db: Database, machineID: String) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM machines WHERE id = ?)", arguments: [machineID]) ?? false
    }

    static func appendEvent(
        _ db: Database, _ kind: MachineEvent.Kind, _ source: MachineEvent.Source,
        machineID: String = "", credential: String = "", at: Timestamp, old: String = "", new: String = ""
    ) throws {
        try db.cachedStatement(sql: """
            INSERT INTO events (kind, source, machine_id, credential, at, old_value, new_value) VALUES (?, ?, ?, ?, ?, ?, ?)
            """
        ).execute(arguments: [kind.rawValue, source.rawValue, machineID, credential, at.nanosecondsSinceEpoch, old, new])
    }

    /// Statuses to keep in their machines' histories, written together:
    /// each as its machine's next number, dropping the one that falls out
    /// of the last ``statusHistoryLimit``.
    private struct HistoryWrites {
        private var rows: [[(any DatabaseValueConvertible)?]] = []
        private var dropped: [(machineID: String, seq: Int64)] = []

        /// Adds `status` after number `last`; returns its number.
        mutating func add(_ status: InstanceStatusRecord, machineID: String, after last: Int64) -> Int64 {
            let seq = last + 1
            rows.append([machineID, seq, status.state.rawValue, status.rawStatus, status.message, status.updatedAt?.nanosecondsSinceEpoch])
            if seq > Int64(statusHistoryLimit) { dropped.append((machineID, seq - Int64(statusHistoryLimit))) }
            return seq
        }

        func write(_ db: Database) throws {
            try SQLiteMachineStore.insert(db, into: "status_history (machine_id, seq, state, raw, message, at)", rows)
            for drop in dropped {
                try db.cachedStatement(sql: "DELETE FROM status_history WHERE machine_id = ? AND seq = ?").execute(arguments: [drop.machineID, drop.seq])
            }
        }
    }

    /// A new agent status; the message goes, and `started` is a start.
    static func writeAgentStatus(_ db: Database, _ status: Machine.AgentStatus, machineID: String, at now: Timestamp) throws {
        if status == .started {
            try db.cachedStatement(sql: "UPDATE machines SET agent_status = ?, agent_message = '', agent_started_at = ? WHERE id = ?")
                .execute(arguments: [status.rawValue, now.nanosecondsSinceEpoch, machineID])
        } else {
            try db.cachedStatement(sql: "UPDATE machines SET agent_status = ?, agent_message = '' WHERE id = ?")
                .execute(arguments: [status.rawValue, machineID])
        }
    }

    /// Every address of the interfaces, comma-separated, as events show them.
    static func addressList(_ interfaces: [ProviderV1.NetworkInterface]) -> String {
        interfaces.flatMap { $0.addresses + $0.shadowAddresses }.map(\.value).joined(separator: ",")
    }

    private static func agentText(_ status: String, _ message: String) -> String {
        message.isEmpty ? status : "\(status): \(message)"
    }

    /// Upserts entries of machines that exist; others are skipped.
    private static func upsert(_ db: Database, schedule entries: [ScheduleEntry]) throws {
        for chunk in chunks(entries) {
            // The WHERE clause also keeps SQLite from reading ON CONFLICT as a join.
            try db.cachedStatement(sql: """
                INSERT INTO schedule (machine_id, grp, interval_ns, due_ns)
                SELECT column1, column2, column3, column4 FROM (VALUES \(placeholders(rows: chunk.count, columns: 4)))
                WHERE column1 IN (SELECT id FROM machines)
                ON CONFLICT (machine_id) DO UPDATE SET
                    grp = excluded.grp, interval_ns = excluded.interval_ns, due_ns = excluded.due_ns
                """
            ).execute(arguments: StatementArguments(chunk.flatMap { entry -> [(any DatabaseValueConvertible)?] in
                [entry.machineID, entry.group.rawValue, entry.interval.totalNanoseconds, entry.due.nanosecondsSinceEpoch]
            }))
        }
    }

    /// Rows per multi-row statement: 500 rows of 8 values stay far below
    /// SQLite's limit of 32 766 parameters. The statements are cached by
    /// size: a sweep's batches are mostly of one size.
    static let rowsPerStatement = 500

    private static func chunks<T>(_ items: [T]) -> [ArraySlice<T>] {
        stride(from: 0, to: items.count, by: rowsPerStatement).map { items[$0..<min($0 + rowsPerStatement, items.count)] }
    }

    /// "(?, ?), (?, ?)" for 2 rows of 2.
    private static func placeholders(rows: Int, columns: Int) -> String {
        let row = "(" + Array(repeating: "?", count: columns).joined(separator: ", ") + ")"
        return Array(repeating: row, count: rows).joined(separator: ", ")
    }

    /// Inserts `rows` (each the values of `target`'s columns) a few hundred
    /// per statement; returns the last row id (0 when there were none).
    @discardableResult
    fileprivate static func insert(_ db: Database, into target: String, _ rows: [[(any DatabaseValueConvertible)?]]) throws -> Int64 {
        guard let width = rows.first?.count else { return 0 }
        for chunk in chunks(rows) {
            try db.cachedStatement(sql: "INSERT INTO \(target) VALUES \(placeholders(rows: chunk.count, columns: width))")
                .execute(arguments: StatementArguments(chunk.joined()))
        }
        return db.lastInsertedRowID
    }

    /// The rows applyPoll needs of these machines, by id: id, status (4
    /// columns), interfaces, poll error, status sequence, agent status and
    /// message.
    private static func pollRows(_ db: Database, ids: [String]) throws -> [String: Row] {
        var rows: [String: Row] = [:]
        for chunk in chunks(ids) {
            let select = try db.cachedStatement(sql: """
                SELECT id, status_state, status_raw, status_message, status_updated_at, interfaces, poll_error,
                    status_seq, agent_status, agent_message
                FROM machines WHERE id IN (\(Array(repeating: "?", count: chunk.count).joined(separator: ", ")))
                """)
            let found = try Row.fetchAll(select, arguments: StatementArguments(Array(chunk)))
            for row in found { rows[try row.decode(atIndex: 0)] = row }
        }
        return rows
    }

    static func machine(from row: Row) throws -> Machine {
        let id: String = try row.decode(forColumn: "id")
        let lifeName: String = try row.decode(forColumn: "life")
        guard let life = Machine.Life(rawValue: lifeName) else {
            throw StoreError("machine \(id) has an unknown life '\(lifeName)'")
        }
        let agentName: String = try row.decode(forColumn: "agent_status")
        guard let agentStatus = Machine.AgentStatus(rawValue: agentName) else {
            throw StoreError("machine \(id) has an unknown agent status '\(agentName)'")
        }
        return Machine(
            id: id,
            provider: try row.decode(forColumn: "provider"),
            credential: try row.decode(forColumn: "credential"),
            instanceID: try row.decode(forColumn: "instance_id"),
            life: life,
            manual: try row.decode(forColumn: "manual"),
            agentStatus: agentStatus,
            agentMessage: try row.decode(forColumn: "agent_message"),
            agentStartedAt: (try row.decode(Int64?.self, forColumn: "agent_started_at")).map(Timestamp.init(nanosecondsSinceEpoch:)),
            instanceStatus: try status(from: row),
            interfaces: try interfaces(from: row, machineID: id),
            pollError: try row.decode(forColumn: "poll_error"))
    }

    static func status(from row: Row) throws -> InstanceStatusRecord {
        let state: Int = try row.decode(forColumn: "status_state")
        let updatedAt: Int64? = try row.decode(forColumn: "status_updated_at")
        return InstanceStatusRecord(
            state: ProviderV1.InstanceState(rawValue: state) ?? .unspecified,
            rawStatus: try row.decode(forColumn: "status_raw"),
            message: try row.decode(forColumn: "status_message"),
            updatedAt: updatedAt.map(Timestamp.init(nanosecondsSinceEpoch:)))
    }

    /// The status from four columns in a row, from `first` on: state, raw
    /// status, message, updated at.
    private static func status(at first: Int, of row: Row) throws -> InstanceStatusRecord {
        let state: Int = try row.decode(atIndex: first)
        let updatedAt: Int64? = try row.decode(atIndex: first + 3)
        return InstanceStatusRecord(
            state: ProviderV1.InstanceState(rawValue: state) ?? .unspecified,
            rawStatus: try row.decode(atIndex: first + 1),
            message: try row.decode(atIndex: first + 2),
            updatedAt: updatedAt.map(Timestamp.init(nanosecondsSinceEpoch:)))
    }

    /// Interfaces are kept as one `InstanceInterfaces` message (only its
    /// `interfaces` field set): plain protobuf that any tool can decode.
    private static func encode(interfaces: [ProviderV1.NetworkInterface], machineID: String) throws -> Data? {
        guard !interfaces.isEmpty else { return nil }
        do {
            let bytes: Data = try ProviderV1.InstanceInterfaces.with { $0.interfaces = interfaces }.serializedBytes()
            return bytes
        } catch {
            throw StoreError("cannot encode the interfaces of machine \(machineID): \(error)")
        }
    }

    static func interfaces(from row: Row, machineID: String) throws -> [ProviderV1.NetworkInterface] {
        try interfaces(try row.decode(forColumn: "interfaces"), machineID: machineID)
    }

    private static func interfaces(_ data: Data?, machineID: String) throws -> [ProviderV1.NetworkInterface] {
        guard let data, !data.isEmpty else { return [] }
        do {
            return try ProviderV1.InstanceInterfaces(serializedBytes: data).interfaces
        } catch {
            throw StoreError("machine \(machineID) has unreadable interfaces: \(error)")
        }
    }

    static func scheduleEntry(from row: Row) throws -> ScheduleEntry {
        let id: String = try row.decode(forColumn: "machine_id")
        let groupName: String = try row.decode(forColumn: "grp")
        guard let group = ScheduleEntry.Group(rawValue: groupName) else {
            throw StoreError("schedule entry of machine \(id) has an unknown group '\(groupName)'")
        }
        return ScheduleEntry(
            machineID: id,
            group: group,
            interval: .nanoseconds(try row.decode(Int64.self, forColumn: "interval_ns")),
            due: Timestamp(nanosecondsSinceEpoch: try row.decode(forColumn: "due_ns")))
    }

    private static func event(from row: Row) throws -> MachineEvent {
        let revision: Int64 = try row.decode(forColumn: "revision")
        let kindName: String = try row.decode(forColumn: "kind")
        let sourceName: String = try row.decode(forColumn: "source")
        guard let kind = MachineEvent.Kind(rawValue: kindName), let source = MachineEvent.Source(rawValue: sourceName) else {
            throw StoreError("event \(revision) has an unknown kind '\(kindName)' or source '\(sourceName)'")
        }
        return MachineEvent(
            revision: revision,
            kind: kind,
            source: source,
            machineID: try row.decode(forColumn: "machine_id"),
            credential: try row.decode(forColumn: "credential"),
            at: Timestamp(nanosecondsSinceEpoch: try row.decode(forColumn: "at")),
            oldValue: try row.decode(forColumn: "old_value"),
            newValue: try row.decode(forColumn: "new_value"))
    }

    private static func credential(from row: Row) throws -> StoredCredential {
        let provider: String = try row.decode(forColumn: "provider")
        let name: String = try row.decode(forColumn: "name")
        let json: String = try row.decode(forColumn: "attributes")
        let attributes: [String: String]
        do {
            attributes = try JSONDecoder().decode([String: String].self, from: Data(json.utf8))
        } catch {
            // Not the error: it may quote the secrets.
            throw StoreError("credential \(provider)/\(name) has unreadable attributes")
        }
        let expiresAt: Int64? = try row.decode(forColumn: "expires_at")
        return StoredCredential(
            provider: provider,
            name: name,
            authType: try row.decode(forColumn: "auth_type"),
            attributes: attributes,
            expiresAt: expiresAt.map(Timestamp.init(nanosecondsSinceEpoch:)),
            invalidReason: try row.decode(forColumn: "invalid_reason"))
    }

    private static func encode(attributes: [String: String], credential: String) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        do {
            return String(decoding: try encoder.encode(attributes), as: UTF8.self)
        } catch {
            throw StoreError("cannot encode the attributes of credential \(credential)")
        }
    }
}
