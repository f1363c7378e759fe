internal import Core
internal import GRDB

/// The fleet a page at a time, and its counts: what the control API lists
/// and `status` shows, without reading 100 000 machines into memory.
extension SQLiteMachineStore {
    public func machines(after id: String, limit: Int, filter: MachineFilter) async throws -> [ListedMachine] {
        guard limit > 0 else { return [] }
        let (conditions, arguments) = Self.conditions(filter, after: id)
        return try await read("listing machines after \(id.isEmpty ? "the start" : id)") { db in
            try Self.all(
                db, """
                    SELECT m.*, s.grp AS s_grp, s.interval_ns AS s_interval_ns, s.due_ns AS s_due_ns
                    FROM machines m LEFT JOIN schedule s ON s.machine_id = m.id
                    WHERE \(conditions) ORDER BY m.id LIMIT ?
                    """,
                arguments: arguments + [limit]
            ) { row in
                let machine = try Self.machine(from: row)
                var entry: ScheduleEntry?
                if let group: String = row["s_grp"] {
                    guard let parsed = ScheduleEntry.Group(rawValue: group) else {
                        throw StoreError(.internal, "machine \(machine.id) has an unknown poll group '\(group)'")
                    }
                    entry = ScheduleEntry(
                        machineID: machine.id, group: parsed, interval: .nanoseconds(try row.decode(Int64.self, forColumn: "s_interval_ns")),
                        due: Timestamp(nanosecondsSinceEpoch: try row.decode(forColumn: "s_due_ns")))
                }
                return ListedMachine(machine: machine, schedule: entry)
            }
        }
    }

    public func machineIDs(after id: String, limit: Int, filter: MachineFilter) async throws -> [String] {
        guard limit > 0 else { return [] }
        let (conditions, arguments) = Self.conditions(filter, after: id)
        return try await read("listing machine ids after \(id.isEmpty ? "the start" : id)") { db in
            try Self.all(
                db, "SELECT m.id FROM machines m LEFT JOIN schedule s ON s.machine_id = m.id WHERE \(conditions) ORDER BY m.id LIMIT ?",
                arguments: arguments + [limit]
            ) { row in try row.decode(atIndex: 0) }
        }
    }

    public func existingMachineIDs(_ ids: [String]) async throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        return try await read("looking up \(ids.count) machine ids") { db in
            var found = Set<String>()
            // SQLite takes at most 32 766 arguments a statement.
            var start = 0
            while start < ids.count {
                let chunk = ids[start..<min(start + 500, ids.count)]
                let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
                let rows = try String.fetchCursor(
                    db.cachedStatement(sql: "SELECT id FROM machines WHERE id IN (\(marks))"), arguments: StatementArguments(Array(chunk)))
                while let id = try rows.next() { found.insert(id) }
                start += chunk.count
            }
            return found
        }
    }

    public func credentialUse(provider: String) async throws -> [String: Int] {
        try await read("counting the credentials of provider \(provider)'s machines") { db in
            var use: [String: Int] = [:]
            for row in try Row.fetchAll(
                db, sql: "SELECT credential, count(*) FROM machines WHERE provider = ? GROUP BY credential", arguments: [provider])
            {
                use[try row.decode(String.self, atIndex: 0)] = try row.decode(Int.self, atIndex: 1)
            }
            return use
        }
    }

    public func summary(now: Timestamp) async throws -> FleetSummary {
        try await read("counting machines") { db in
            var summary = FleetSummary()
            let notFound = [ProviderV1.InstanceState.unknown.rawValue, InstanceStatusRecord.notFoundRawStatus] as StatementArguments
            if let row = try Row.fetchOne(db, sql: """
                SELECT count(*),
                    COALESCE(sum(poll_error IS NOT NULL AND poll_error <> ''), 0),
                    COALESCE(sum(status_state = ? AND status_raw = ?), 0)
                FROM machines
                """, arguments: notFound)
            {
                summary.machines = try row.decode(atIndex: 0)
                summary.pollErrors = try row.decode(atIndex: 1)
                summary.notFound = try row.decode(atIndex: 2)
            }
            for row in try Row.fetchAll(db, sql: "SELECT status_state, count(*) FROM machines GROUP BY status_state") {
                let state = ProviderV1.InstanceState(rawValue: try row.decode(atIndex: 0)) ?? .unspecified
                summary.byState[state.label, default: 0] += try row.decode(Int.self, atIndex: 1)
            }
            for row in try Row.fetchAll(
                db, sql: "SELECT grp, count(*), COALESCE(sum(due_ns + interval_ns < ?), 0) FROM schedule GROUP BY grp",
                arguments: [now.nanosecondsSinceEpoch])
            {
                let count: Int = try row.decode(atIndex: 1)
                switch try row.decode(String.self, atIndex: 0) {
                case ScheduleEntry.Group.long.rawValue: summary.longGroup = count
                default: summary.shortGroup += count
                }
                summary.overdue += try row.decode(Int.self, atIndex: 2)
            }
            return summary
        }
    }

    /// The WHERE clause of a listing (machines `m` joined with their
    /// schedule `s`) and its arguments.
    static func conditions(_ filter: MachineFilter, after id: String) -> (String, StatementArguments) {
        var clauses = ["m.id > ?"]
        var arguments: StatementArguments = [id]
        if let only = filter.id {
            clauses.append("m.id = ?")
            arguments += [only]
        }
        if let provider = filter.provider {
            clauses.append("m.provider = ?")
            arguments += [provider]
        }
        if let credential = filter.credential {
            clauses.append("m.credential = ?")
            arguments += [credential]
        }
        switch filter.state {
        case nil: break
        case .notFound:
            clauses.append("m.status_state = ? AND m.status_raw = ?")
            arguments += [ProviderV1.InstanceState.unknown.rawValue, InstanceStatusRecord.notFoundRawStatus]
        case .state(let state):
            clauses.append("m.status_state = ?")
            arguments += [state.rawValue]
        }
        switch filter.group {
        case nil: break
        case .untracked: clauses.append("s.machine_id IS NULL")
        case .short:
            clauses.append("s.grp = ?")
            arguments += [ScheduleEntry.Group.short.rawValue]
        case .long:
            clauses.append("s.grp = ?")
            arguments += [ScheduleEntry.Group.long.rawValue]
        }
        if let agent = filter.agentStatus {
            clauses.append("m.agent_status = ?")
            arguments += [agent.rawValue]
        }
        if filter.withError { clauses.append("m.poll_error IS NOT NULL AND m.poll_error <> ''") }
        return (clauses.joined(separator: " AND "), arguments)
    }
}
