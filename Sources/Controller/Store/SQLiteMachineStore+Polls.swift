internal import Core
internal import Foundation
internal import GRDB
internal import Logging

/// What the poller writes: polled truth, a batch at a time, and the
/// schedule.
extension SQLiteMachineStore {
    @discardableResult
    public func applyPoll(_ results: [PollResult], schedule: [ScheduleEntry], fence: LeaseFence?) async throws -> [MachineEvent] {
        // One controller owns the file: there is no lease to check.
        if let fence { throw StoreError(.failedPrecondition, "the SQLite store has no leases (\(fence))") }
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
                        let (old, newList) = (StoredValues.addressList(before), StoredValues.addressList(new))
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
                        log(.agentStatusChanged, id, StoredValues.agentText(agentBefore, messageBefore), StoredValues.agentText("error", message))
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
                throw StoreError.noMachine(machineID)
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

    // MARK: Schedule

    public func schedule() async throws -> [ScheduleEntry] {
        try await read("reading the schedule") { db in
            try Self.all(db, "SELECT * FROM schedule ORDER BY machine_id", Self.scheduleEntry(from:))
        }
    }

    public func schedule(of key: CredentialKey) async throws -> [ScheduleEntry] {
        try await read("reading the schedule of \(key)") { db in
            try Self.all(
                db, """
                    SELECT schedule.* FROM schedule JOIN machines ON machines.id = schedule.machine_id
                    WHERE machines.provider = ? AND machines.credential = ? ORDER BY schedule.machine_id
                    """,
                arguments: [key.provider, key.name], Self.scheduleEntry(from:))
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

    static func scheduleEntry(from row: Row) throws -> ScheduleEntry {
        let id: String = try row.decode(forColumn: "machine_id")
        let groupName: String = try row.decode(forColumn: "grp")
        guard let group = ScheduleEntry.Group(rawValue: groupName) else {
            throw StoreError(.internal, "schedule entry of machine \(id) has an unknown group '\(groupName)'")
        }
        return ScheduleEntry(
            machineID: id,
            group: group,
            interval: .nanoseconds(try row.decode(Int64.self, forColumn: "interval_ns")),
            due: Timestamp(nanosecondsSinceEpoch: try row.decode(forColumn: "due_ns")))
    }
}
