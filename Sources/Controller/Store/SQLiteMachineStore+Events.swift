internal import Core
internal import GRDB

/// The events log: each change appends to it in its own transaction.
extension SQLiteMachineStore {
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
            let latest = try Self.latest(db)
            let events = try Self.all(
                db, "SELECT * FROM events WHERE revision > ? AND revision <= ? AND source = ? ORDER BY revision LIMIT ?",
                arguments: [revision, latest, MachineEvent.Source.external.rawValue, limit], Self.event(from:))
            let through = events.count == limit ? events[events.count - 1].revision : max(latest, revision)
            return ExternalEvents(events: events, through: through)
        }
    }

    public func latestRevision() async throws -> Int64 {
        try await read("reading the latest revision") { db in try Self.latest(db) }
    }

    /// The newest revision ever given, also once retention removed it.
    static func latest(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: """
            SELECT MAX(COALESCE((SELECT MAX(revision) FROM events), 0),
                       COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))
            """) ?? 0
    }

    @discardableResult
    public func pruneEvents(before: Timestamp?, keepingLast: Int64?) async throws -> Int {
        guard before != nil || keepingLast != nil else { return 0 }
        return try await write("pruning the events log") { db -> Int in
            var removed = 0
            if let before {
                try db.execute(sql: "DELETE FROM events WHERE at < ?", arguments: [before.nanosecondsSinceEpoch])
                removed += db.changesCount
            }
            if let keepingLast {
                try db.execute(sql: "DELETE FROM events WHERE revision <= ?", arguments: [try Self.latest(db) - max(keepingLast, 0)])
                removed += db.changesCount
            }
            return removed
        }
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

    private static func event(from row: Row) throws -> MachineEvent {
        let revision: Int64 = try row.decode(forColumn: "revision")
        let kindName: String = try row.decode(forColumn: "kind")
        let sourceName: String = try row.decode(forColumn: "source")
        guard let kind = MachineEvent.Kind(rawValue: kindName), let source = MachineEvent.Source(rawValue: sourceName) else {
            throw StoreError(.internal, "event \(revision) has an unknown kind '\(kindName)' or source '\(sourceName)'")
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
}
