internal import Core
internal import PostgresNIO

/// The fleet a page at a time, and its counts: what the control API lists
/// and `status` shows, without reading 100 000 machines into memory.
extension PostgresMachineStore {
    public func machines(after id: String, limit: Int, filter: MachineFilter) async throws -> [ListedMachine] {
        guard limit > 0 else { return [] }
        var binder = Binder()
        let conditions = Self.conditions(filter, after: id, &binder)
        let query = PostgresQuery(
            unsafeSQL: """
                SELECT \(Self.listedMachineColumns), s.grp, s.interval_ns, s.due_ns
                FROM machines m LEFT JOIN schedule s ON s.machine_id = m.id
                WHERE \(conditions) ORDER BY m.id LIMIT \(binder.bind(limit))
                """, binds: binder.binds)
        return try await withConnection("listing machines after \(id.isEmpty ? "the start" : id)") { connection in
            try await connection.values(query) { row in
                let machine = try Self.machine(from: row)
                let first = Self.machineColumnNames.count
                var entry: ScheduleEntry?
                if let group = try row.at(first, as: String?.self) {
                    guard let parsed = ScheduleEntry.Group(rawValue: group) else {
                        throw StoreError(.internal, "machine \(machine.id) has an unknown poll group '\(group)'")
                    }
                    entry = ScheduleEntry(
                        machineID: machine.id, group: parsed, interval: .nanoseconds(try row.at(first + 1, as: Int64.self)),
                        due: Timestamp(nanosecondsSinceEpoch: try row.at(first + 2)))
                }
                return ListedMachine(machine: machine, schedule: entry)
            }
        }
    }

    public func machineIDs(after id: String, limit: Int, filter: MachineFilter) async throws -> [String] {
        guard limit > 0 else { return [] }
        var binder = Binder()
        let conditions = Self.conditions(filter, after: id, &binder)
        let query = PostgresQuery(
            unsafeSQL: """
                SELECT m.id FROM machines m LEFT JOIN schedule s ON s.machine_id = m.id
                WHERE \(conditions) ORDER BY m.id LIMIT \(binder.bind(limit))
                """, binds: binder.binds)
        return try await withConnection("listing machine ids after \(id.isEmpty ? "the start" : id)") { connection in
            try await connection.values(query) { try $0.at(0, as: String.self) }
        }
    }

    public func existingMachineIDs(_ ids: [String]) async throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        return try await withConnection("looking up \(ids.count) machine ids") { connection in
            var found = Set<String>()
            for chunk in Self.chunks(ids) {
                for id in try await connection.values("SELECT id FROM machines WHERE id = ANY(\(Array(chunk))::text[])", { try $0.at(0, as: String.self) }) {
                    found.insert(id)
                }
            }
            return found
        }
    }

    public func summary(now: Timestamp) async throws -> FleetSummary {
        try await withConnection("counting machines") { connection in
            // One statement: every count from one snapshot.
            let rows = try await connection.values(
                """
                SELECT 'all', NULL::integer, count(*),
                    count(*) FILTER (WHERE poll_error IS NOT NULL AND poll_error <> ''),
                    count(*) FILTER (WHERE status_state = \(Int32(ProviderV1.InstanceState.unknown.rawValue))
                        AND status_raw = \(InstanceStatusRecord.notFoundRawStatus))
                FROM machines
                UNION ALL
                SELECT 'state', status_state, count(*), 0, 0 FROM machines GROUP BY status_state
                UNION ALL
                SELECT grp, NULL, count(*), count(*) FILTER (WHERE due_ns + interval_ns < \(now.nanosecondsSinceEpoch)), 0
                FROM schedule GROUP BY grp
                """
            ) { row -> (String, Int?, Int, Int, Int) in
                (try row.at(0), try row.at(1), try row.at(2), try row.at(3), try row.at(4))
            }
            var summary = FleetSummary()
            for (tag, state, count, second, third) in rows {
                switch tag {
                case "all":
                    summary.machines = count
                    summary.pollErrors = second
                    summary.notFound = third
                case "state":
                    let label = (ProviderV1.InstanceState(rawValue: state ?? 0) ?? .unspecified).label
                    summary.byState[label, default: 0] += count
                case ScheduleEntry.Group.long.rawValue:
                    summary.longGroup = count
                    summary.overdue += second
                default:
                    summary.shortGroup += count
                    summary.overdue += second
                }
            }
            return summary
        }
    }

    /// Parameters of a statement built in pieces: each bound value's
    /// placeholder in turn.
    struct Binder {
        var binds = PostgresBindings()

        mutating func bind(_ value: String) -> String {
            binds.append(value)
            return "$\(binds.count)"
        }

        mutating func bind(_ value: Int) -> String {
            binds.append(value)
            return "$\(binds.count)"
        }
    }

    /// The WHERE clause of a listing (machines `m` joined with their
    /// schedule `s`), its values bound in `binder`.
    static func conditions(_ filter: MachineFilter, after id: String, _ binder: inout Binder) -> String {
        var clauses = ["m.id > \(binder.bind(id))"]
        if let only = filter.id { clauses.append("m.id = \(binder.bind(only))") }
        if let provider = filter.provider { clauses.append("m.provider = \(binder.bind(provider))") }
        if let credential = filter.credential { clauses.append("m.credential = \(binder.bind(credential))") }
        switch filter.state {
        case nil: break
        case .notFound:
            clauses.append(
                "m.status_state = \(binder.bind(ProviderV1.InstanceState.unknown.rawValue)) "
                    + "AND m.status_raw = \(binder.bind(InstanceStatusRecord.notFoundRawStatus))")
        case .state(let state):
            clauses.append("m.status_state = \(binder.bind(state.rawValue))")
        }
        switch filter.group {
        case nil: break
        case .untracked: clauses.append("s.machine_id IS NULL")
        case .short: clauses.append("s.grp = \(binder.bind(ScheduleEntry.Group.short.rawValue))")
        case .long: clauses.append("s.grp = \(binder.bind(ScheduleEntry.Group.long.rawValue))")
        }
        if let agent = filter.agentStatus { clauses.append("m.agent_status = \(binder.bind(agent.rawValue))") }
        if filter.withError { clauses.append("m.poll_error IS NOT NULL AND m.poll_error <> ''") }
        return clauses.joined(separator: " AND ")
    }
}
