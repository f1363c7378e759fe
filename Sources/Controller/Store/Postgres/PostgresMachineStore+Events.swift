internal import Core
internal import PostgresNIO

/// The events log: each change appends to it in its own transaction, its
/// revisions taken from `revision_counter` as the last step.
extension PostgresMachineStore {
    public func events(after revision: Int64, limit: Int) async throws -> [MachineEvent] {
        guard limit > 0 else { return [] }
        return try await withConnection("reading events after revision \(revision)") { connection in
            try await connection.values(
                "SELECT \(unescaped: Self.eventColumns) FROM events WHERE revision > \(revision) ORDER BY revision LIMIT \(limit)",
                Self.event(from:))
        }
    }

    public func externalEvents(after revision: Int64, limit: Int) async throws -> ExternalEvents {
        guard limit > 0 else { return ExternalEvents(events: [], through: revision) }
        return try await withConnection("reading events after revision \(revision)") { connection in
            // Revisions commit in order: every event up to the latest
            // revision read here has committed, so the log is read up to it.
            let latest = try await Self.latest(connection)
            let events = try await connection.values(
                """
                SELECT \(unescaped: Self.eventColumns) FROM events
                WHERE revision > \(revision) AND revision <= \(latest) AND source = \(MachineEvent.Source.external.rawValue)
                ORDER BY revision LIMIT \(limit)
                """, Self.event(from:))
            let through = events.count == limit ? events[events.count - 1].revision : max(latest, revision)
            return ExternalEvents(events: events, through: through)
        }
    }

    public func latestRevision() async throws -> Int64 {
        try await withConnection("reading the latest revision") { connection in try await Self.latest(connection) }
    }

    /// The newest revision ever given, also once retention removed it.
    static func latest(_ connection: PostgresConnection) async throws -> Int64 {
        guard let value = try await connection.values("SELECT value FROM revision_counter WHERE id = 1", { try $0.at(0, as: Int64.self) }).first
        else {
            throw StoreError(.internal, "the revision counter is missing")
        }
        return value
    }

    @discardableResult
    public func pruneEvents(before: Timestamp?, keepingLast: Int64?) async throws -> Int {
        guard before != nil || keepingLast != nil else { return 0 }
        return try await transaction("pruning the events log") { connection -> Int in
            var removed = 0
            if let before {
                removed += try await Self.count(
                    connection, "WITH gone AS (DELETE FROM events WHERE at < \(before.nanosecondsSinceEpoch) RETURNING 1) SELECT count(*) FROM gone")
            }
            if let keepingLast {
                let bound = try await Self.latest(connection) - max(keepingLast, 0)
                removed += try await Self.count(
                    connection, "WITH gone AS (DELETE FROM events WHERE revision <= \(bound) RETURNING 1) SELECT count(*) FROM gone")
            }
            return removed
        }
    }

    /// The one count a statement answers.
    static func count(_ connection: PostgresConnection, _ query: PostgresQuery) async throws -> Int {
        try await connection.values(query) { try $0.at(0, as: Int.self) }.first ?? 0
    }

    /// Appends `events` (their revisions ignored) and notifies the other
    /// controllers; returns them with their revisions. Must be the last
    /// step of a transaction: the counter's row stays locked until the
    /// commit, and every other appender waits for it (docs/DESIGN.md §8).
    static func append(_ events: [MachineEvent], on connection: PostgresConnection) async throws -> [MachineEvent] {
        guard !events.isEmpty else { return [] }
        guard
            let last = try await connection.values(
                "UPDATE revision_counter SET value = value + \(Int64(events.count)) WHERE id = 1 RETURNING value", { try $0.at(0, as: Int64.self) }
            ).first
        else {
            throw StoreError(.internal, "the revision counter is missing")
        }
        var numbered = events
        let first = last - Int64(events.count) + 1
        for index in numbered.indices { numbered[index].revision = first + Int64(index) }
        for chunk in chunks(numbered) {
            try await connection.execute("""
                INSERT INTO events (revision, kind, source, machine_id, credential, at, old_value, new_value)
                SELECT * FROM UNNEST(
                    \(chunk.map(\.revision))::bigint[], \(chunk.map(\.kind.rawValue))::text[], \(chunk.map(\.source.rawValue))::text[],
                    \(chunk.map(\.machineID))::text[], \(chunk.map(\.credential))::text[], \(chunk.map(\.at.nanosecondsSinceEpoch))::bigint[],
                    \(chunk.map(\.oldValue))::text[], \(chunk.map(\.newValue))::text[])
                """)
        }
        // Delivered at commit, to every controller listening.
        try await connection.execute("SELECT pg_notify(\(channel), \(String(last)))")
        return numbered
    }

    static let eventColumns = "revision, kind, source, machine_id, credential, at, old_value, new_value"

    static func event(from row: PostgresRandomAccessRow) throws -> MachineEvent {
        let revision = try row.at(0, as: Int64.self)
        let kindName = try row.at(1, as: String.self)
        let sourceName = try row.at(2, as: String.self)
        guard let kind = MachineEvent.Kind(rawValue: kindName), let source = MachineEvent.Source(rawValue: sourceName) else {
            throw StoreError(.internal, "event \(revision) has an unknown kind '\(kindName)' or source '\(sourceName)'")
        }
        return MachineEvent(
            revision: revision,
            kind: kind,
            source: source,
            machineID: try row.at(3),
            credential: try row.at(4),
            at: Timestamp(nanosecondsSinceEpoch: try row.at(5)),
            oldValue: try row.at(6),
            newValue: try row.at(7))
    }

    /// Rows per multi-row statement (each column one array parameter).
    static let rowsPerStatement = 1000

    static func chunks<T>(_ items: [T]) -> [ArraySlice<T>] {
        stride(from: 0, to: items.count, by: rowsPerStatement).map { items[$0..<min($0 + rowsPerStatement, items.count)] }
    }
}
