internal import Core
internal import Logging
internal import NIOCore
internal import PostgresNIO

/// What the poller writes: polled truth, a batch at a time, the schedule
/// and the status history.
extension PostgresMachineStore {
    @discardableResult
    public func applyPoll(_ results: [PollResult], schedule: [ScheduleEntry], fence: LeaseFence?) async throws -> [MachineEvent] {
        let now = clock.now
        let events = try await transaction("applying a poll of \(results.count) machines") { connection -> [MachineEvent] in
            // Before anything is read: a controller that lost the pair
            // writes nothing, and one that holds it keeps it to the commit
            // (a claim waits on the share lock).
            if let fence { try await Self.check(fence, on: connection) }
            // A batch is read, written and logged with a statement per
            // thousand machines, not one per machine: this runs for every
            // batch of every sweep. Its rows (and the scheduled machines')
            // are locked in id order, as every writer locks them.
            var rows = try await Self.lockPollRows(connection, ids: results.map(\.machineID) + schedule.map(\.machineID))
            var events: [MachineEvent] = []
            var history = HistoryWrites()
            var written = Set<String>()
            var agentErrors = Set<String>()
            func log(_ kind: MachineEvent.Kind, _ id: String, _ old: String, _ new: String) {
                events.append(MachineEvent(revision: 0, kind: kind, source: .poller, machineID: id, at: now, oldValue: old, newValue: new))
            }
            for result in results {
                // Removed since the poll began: nothing to write.
                guard var row = rows[result.machineID] else { continue }
                let id = result.machineID
                var changed = false
                var polled: (old: String, new: String)?
                if var new = result.instanceStatus, !new.sameReport(as: row.status) {
                    new.updatedAt = now
                    row.statusSeq = history.add(new, machineID: id, after: row.statusSeq, at: now)
                    log(.instanceStatusChanged, id, row.status.summary, new.summary)
                    row.status = new
                    changed = true
                }
                if let new = result.interfaces {
                    let before = try Self.interfaces(row.interfaces, machineID: id)
                    if new != before {
                        row.interfaces = try StoredValues.encode(interfaces: new, machineID: id).map { ByteBuffer(bytes: $0) }
                        let (old, newList) = (StoredValues.addressList(before), StoredValues.addressList(new))
                        if old != newList {
                            log(.addressesChanged, id, old, newList)
                        } else {
                            polled = ("", "")
                        }
                        changed = true
                    }
                }
                if row.pollError != result.pollError {
                    // An error that appears or clears is news for watchers too.
                    polled = (row.pollError ?? "", result.pollError ?? "")
                    row.pollError = result.pollError
                    changed = true
                }
                if let polled { log(.machinePolled, id, polled.old, polled.new) }
                if changed { written.insert(id) }
                if let message = result.agentError, row.agentStatus != Machine.AgentStatus.error.rawValue || row.agentMessage != message {
                    log(.agentStatusChanged, id, StoredValues.agentText(row.agentStatus, row.agentMessage), StoredValues.agentText("error", message))
                    row.agentStatus = Machine.AgentStatus.error.rawValue
                    row.agentMessage = message
                    agentErrors.insert(id)
                }
                rows[id] = row
            }
            try await Self.writePolled(connection, written.sorted().compactMap { rows[$0] })
            for chunk in Self.chunks(agentErrors.sorted().compactMap { rows[$0] }) {
                try await connection.execute("""
                    UPDATE machines m SET agent_status = \(Machine.AgentStatus.error.rawValue), agent_message = u.message
                    FROM UNNEST(\(chunk.map(\.id))::text[], \(chunk.map(\.agentMessage))::text[]) AS u(id, message)
                    WHERE m.id = u.id
                    """)
            }
            try await history.write(connection)
            try await Self.upsert(connection, schedule: schedule.filter { rows[$0.machineID] != nil })
            return try await Self.append(events, on: connection)
        }
        logger.debug(
            "poll applied",
            metadata: ["results": "\(results.count)", "events": "\(events.count)", "schedule": "\(schedule.count)"])
        if !events.isEmpty { didChange() }
        return events
    }

    /// Throws ``StoreError/leaseLost(_:)`` unless the fence's holder holds
    /// the pair at its epoch, and keeps the lease row share-locked until the
    /// transaction ends. An expired lease nobody claimed still counts: its
    /// epoch is unchanged, and a claim that changes it must wait for the
    /// lock.
    static func check(_ fence: LeaseFence, on connection: PostgresConnection) async throws {
        let rows = try await connection.rows("""
            SELECT epoch FROM leases WHERE key = \(fence.key.description) AND holder = \(fence.holder) AND epoch = \(fence.epoch) FOR SHARE
            """)
        if rows.isEmpty { throw StoreError.leaseLost(fence) }
    }

    public func setInstanceStatus(machineID: String, _ status: InstanceStatusRecord) async throws {
        let now = clock.now
        try await transaction("setting the instance status of machine \(machineID)") { connection in
            guard var row = try await Self.lockPollRows(connection, ids: [machineID])[machineID] else {
                throw StoreError.noMachine(machineID)
            }
            let before = row.status
            var written = status
            written.updatedAt = now
            var history = HistoryWrites()
            row.statusSeq = history.add(written, machineID: machineID, after: row.statusSeq, at: now)
            row.status = written
            try await history.write(connection)
            try await Self.writePolled(connection, [row])
            _ = try await Self.append(
                [
                    MachineEvent(
                        revision: 0, kind: .instanceStatusChanged, source: .poller, machineID: machineID, at: now, oldValue: before.summary,
                        newValue: written.summary)
                ], on: connection)
        }
        logger.debug("instance status set", metadata: ["machine": "\(machineID)", "state": "\(status.state.label)"])
        didChange()
    }

    public func statusHistory(machineID: String) async throws -> [InstanceStatusRecord] {
        try await withConnection("reading the status history of machine \(machineID)") { connection in
            try await connection.values("""
                SELECT state, raw, message, at FROM status_history WHERE machine_id = \(machineID)
                ORDER BY seq DESC LIMIT \(statusHistoryLimit)
                """
            ) { row in
                InstanceStatusRecord(
                    state: ProviderV1.InstanceState(rawValue: try row.at(0, as: Int.self)) ?? .unspecified,
                    rawStatus: try row.at(1),
                    message: try row.at(2),
                    updatedAt: Timestamp(nanosecondsSinceEpoch: try row.at(3)))
            }
        }
    }

    // MARK: Schedule

    public func schedule() async throws -> [ScheduleEntry] {
        try await withConnection("reading the schedule") { connection in
            try await connection.values("SELECT machine_id, grp, interval_ns, due_ns FROM schedule ORDER BY machine_id", Self.scheduleEntry(from:))
        }
    }

    public func schedule(of key: CredentialKey) async throws -> [ScheduleEntry] {
        try await withConnection("reading the schedule of \(key)") { connection in
            try await connection.values(
                """
                SELECT s.machine_id, s.grp, s.interval_ns, s.due_ns FROM schedule s JOIN machines m ON m.id = s.machine_id
                WHERE m.provider = \(key.provider) AND m.credential = \(key.name) ORDER BY s.machine_id
                """, Self.scheduleEntry(from:))
        }
    }

    /// Entries for machines that are not in the store are skipped, so that a
    /// machine removed meanwhile does not leave a schedule row behind.
    public func saveSchedule(_ entries: [ScheduleEntry], removing: [String]) async throws {
        try await transaction("saving the schedule") { connection in
            for chunk in Self.chunks(removing) {
                try await connection.execute("DELETE FROM schedule WHERE machine_id = ANY(\(Array(chunk))::text[])")
            }
            // Kept from being removed until the commit.
            var present = Set<String>()
            for chunk in Self.chunks(Array(Set(entries.map(\.machineID))).sorted()) {
                for id in try await connection.values(
                    "SELECT id FROM machines WHERE id = ANY(\(Array(chunk))::text[]) ORDER BY id FOR KEY SHARE", { try $0.at(0, as: String.self) })
                {
                    present.insert(id)
                }
            }
            try await Self.upsert(connection, schedule: entries.filter { present.contains($0.machineID) })
        }
    }

    /// Upserts entries (of machines known to exist); of two for one
    /// machine, the later wins.
    private static func upsert(_ connection: PostgresConnection, schedule entries: [ScheduleEntry]) async throws {
        var latest: [String: Int] = [:]
        for (index, entry) in entries.enumerated() { latest[entry.machineID] = index }
        let unique = entries.indices.filter { latest[entries[$0].machineID] == $0 }.map { entries[$0] }
        for chunk in chunks(unique) {
            try await connection.execute("""
                INSERT INTO schedule (machine_id, grp, interval_ns, due_ns)
                SELECT * FROM UNNEST(
                    \(chunk.map(\.machineID))::text[], \(chunk.map(\.group.rawValue))::text[],
                    \(chunk.map(\.interval.totalNanoseconds))::bigint[], \(chunk.map(\.due.nanosecondsSinceEpoch))::bigint[])
                ON CONFLICT (machine_id) DO UPDATE SET
                    grp = EXCLUDED.grp, interval_ns = EXCLUDED.interval_ns, due_ns = EXCLUDED.due_ns
                """)
        }
    }

    /// What applyPoll reads and writes of a machine.
    struct PollRow: Sendable {
        var id: String
        var status: InstanceStatusRecord
        var interfaces: ByteBuffer?
        var pollError: String?
        var statusSeq: Int64
        var agentStatus: String
        var agentMessage: String
    }

    /// Locks these machines' rows (those that exist) in id order until the
    /// transaction ends; returns what a poll writes of them, by id.
    private static func lockPollRows(_ connection: PostgresConnection, ids: [String]) async throws -> [String: PollRow] {
        var rows: [String: PollRow] = [:]
        for chunk in chunks(Array(Set(ids)).sorted()) {
            let found = try await connection.values(
                """
                SELECT id, status_state, status_raw, status_message, status_updated_at, interfaces, poll_error,
                    status_seq, agent_status, agent_message
                FROM machines WHERE id = ANY(\(Array(chunk))::text[]) ORDER BY id FOR UPDATE
                """
            ) { row in
                PollRow(
                    id: try row.at(0), status: try status(at: 1, of: row), interfaces: try row.at(5), pollError: try row.at(6),
                    statusSeq: try row.at(7), agentStatus: try row.at(8), agentMessage: try row.at(9))
            }
            for row in found { rows[row.id] = row }
        }
        return rows
    }

    /// Writes the polled truth of these machines: status, interfaces, poll
    /// error and status sequence.
    private static func writePolled(_ connection: PostgresConnection, _ rows: [PollRow]) async throws {
        for chunk in chunks(rows) {
            let updated = NullableColumn(chunk.map { $0.status.updatedAt?.nanosecondsSinceEpoch }, placeholder: 0)
            let interfaces = NullableColumn(chunk.map(\.interfaces), placeholder: ByteBuffer())
            let errors = NullableColumn(chunk.map(\.pollError), placeholder: "")
            try await connection.execute("""
                UPDATE machines m SET status_state = u.state, status_raw = u.raw, status_message = u.message,
                    status_updated_at = CASE WHEN u.updated_null THEN NULL ELSE u.updated END,
                    interfaces = CASE WHEN u.interfaces_null THEN NULL ELSE u.interfaces END,
                    poll_error = CASE WHEN u.error_null THEN NULL ELSE u.error END,
                    status_seq = u.seq
                FROM UNNEST(
                    \(chunk.map(\.id))::text[], \(chunk.map { Int32($0.status.state.rawValue) })::int[],
                    \(chunk.map(\.status.rawStatus))::text[], \(chunk.map(\.status.message))::text[],
                    \(updated.values)::bigint[], \(updated.nulls)::bool[], \(interfaces.values)::bytea[], \(interfaces.nulls)::bool[],
                    \(errors.values)::text[], \(errors.nulls)::bool[], \(chunk.map(\.statusSeq))::bigint[]
                ) AS u(id, state, raw, message, updated, updated_null, interfaces, interfaces_null, error, error_null, seq)
                WHERE m.id = u.id
                """)
        }
    }

    static func scheduleEntry(from row: PostgresRandomAccessRow) throws -> ScheduleEntry {
        let id: String = try row.at(0)
        let groupName: String = try row.at(1)
        guard let group = ScheduleEntry.Group(rawValue: groupName) else {
            throw StoreError(.internal, "schedule entry of machine \(id) has an unknown group '\(groupName)'")
        }
        return ScheduleEntry(
            machineID: id, group: group, interval: .nanoseconds(try row.at(2, as: Int64.self)),
            due: Timestamp(nanosecondsSinceEpoch: try row.at(3)))
    }

    /// Statuses to keep in their machines' histories, written together:
    /// each as its machine's next number, dropping the one that falls out
    /// of the last ``statusHistoryLimit``.
    struct HistoryWrites {
        private var machineIDs: [String] = []
        private var seqs: [Int64] = []
        private var states: [Int32] = []
        private var raws: [String] = []
        private var messages: [String] = []
        private var times: [Int64] = []
        private var dropped: [(machineID: String, seq: Int64)] = []

        /// Adds `status` after number `last`; returns its number.
        mutating func add(_ status: InstanceStatusRecord, machineID: String, after last: Int64, at now: Timestamp) -> Int64 {
            let seq = last + 1
            machineIDs.append(machineID)
            seqs.append(seq)
            states.append(Int32(status.state.rawValue))
            raws.append(status.rawStatus)
            messages.append(status.message)
            times.append((status.updatedAt ?? now).nanosecondsSinceEpoch)
            if seq > Int64(statusHistoryLimit) { dropped.append((machineID, seq - Int64(statusHistoryLimit))) }
            return seq
        }

        func write(_ connection: PostgresConnection) async throws {
            for range in PostgresMachineStore.chunks(Array(machineIDs.indices)) {
                let slice = range.first!...range.last!
                try await connection.execute("""
                    INSERT INTO status_history (machine_id, seq, state, raw, message, at)
                    SELECT * FROM UNNEST(
                        \(Array(machineIDs[slice]))::text[], \(Array(seqs[slice]))::bigint[], \(Array(states[slice]))::int[],
                        \(Array(raws[slice]))::text[], \(Array(messages[slice]))::text[], \(Array(times[slice]))::bigint[])
                    """)
            }
            for chunk in PostgresMachineStore.chunks(dropped) {
                try await connection.execute("""
                    DELETE FROM status_history h USING UNNEST(\(chunk.map(\.machineID))::text[], \(chunk.map(\.seq))::bigint[]) AS d(id, seq)
                    WHERE h.machine_id = d.id AND h.seq = d.seq
                    """)
            }
        }
    }
}
