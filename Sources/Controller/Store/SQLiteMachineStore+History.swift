internal import Core
internal import GRDB

/// Each machine's last instance statuses.
extension SQLiteMachineStore {
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

    /// Statuses to keep in their machines' histories, written together:
    /// each as its machine's next number, dropping the one that falls out
    /// of the last ``statusHistoryLimit``.
    struct HistoryWrites {
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
}
