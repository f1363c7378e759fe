internal import Core
internal import Logging
internal import NIOCore
internal import PostgresNIO
internal import SwiftProtobuf

/// Machines: adding, changing, removing and reading them, and making them
/// from their rows. Every write locks the machines' rows in id order first,
/// so that writers touching the same machines wait for each other instead
/// of deadlocking, and compare against what they then overwrite.
extension PostgresMachineStore {
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
        let encoded = try machines.map { ($0, try StoredValues.encode(interfaces: $0.interfaces, machineID: $0.id)) }
        let what = machines.count == 1 ? "adding machine \(machines[0].id)" : "adding \(machines.count) machines"
        let counts = try await transaction(what) { connection -> ImportCounts in
            var rows = try await Self.lockOwnedFields(connection, ids: machines.map(\.id))
            var counts = ImportCounts()
            var inserts: [(Machine, [UInt8]?)] = []
            var changed = Set<String>()
            var events: [MachineEvent] = []
            // In the order given, as one machine after another would be: a
            // machine given twice is added, then updated (or refused).
            for (machine, interfaces) in encoded {
                if let row = rows[machine.id] {
                    guard update else { throw StoreError.machineExists(machine.id) }
                    if let after = row.updated(to: machine, keepingLife: true, at: now) {
                        rows[machine.id] = after
                        changed.insert(machine.id)
                        events.append(MachineEvent(revision: 0, kind: .machineChanged, source: .external, machineID: machine.id, at: now))
                        counts.updated += 1
                    } else {
                        counts.unchanged += 1
                    }
                    continue
                }
                var added = machine
                // A machine whose agent is started when added: that is its start.
                added.agentStartedAt = machine.agentStartedAt ?? (machine.agentStatus == .started ? now : nil)
                inserts.append((added, interfaces))
                rows[machine.id] = OwnedFields(added)
                events.append(MachineEvent(revision: 0, kind: .machineAdded, source: .external, machineID: machine.id, at: now))
                counts.added += 1
            }
            try await Self.insert(connection, inserts)
            try await Self.write(connection, changed.sorted().compactMap { rows[$0] })
            _ = try await Self.append(events, on: connection)
            return counts
        }
        logger.debug("machines imported", metadata: ["added": "\(counts.added)", "updated": "\(counts.updated)"])
        if counts.added + counts.updated > 0 { didChange() }
        return counts
    }

    public func updateMachine(_ machine: Machine) async throws {
        let now = clock.now
        let changed = try await transaction("updating machine \(machine.id)") { connection -> Bool in
            let rows = try await Self.lockOwnedFields(connection, ids: [machine.id])
            guard let row = rows[machine.id] else { throw StoreError.noMachine(machine.id) }
            guard let after = row.updated(to: machine, keepingLife: false, at: now) else { return false }
            try await Self.write(connection, [after])
            _ = try await Self.append(
                [MachineEvent(revision: 0, kind: .machineChanged, source: .external, machineID: machine.id, at: now)], on: connection)
            return true
        }
        guard changed else { return }
        logger.debug("machine changed", metadata: ["machine": "\(machine.id)"])
        didChange()
    }

    @discardableResult
    public func reportAgentStatus(machineID: String, _ status: Machine.AgentStatus) async throws -> Machine {
        let now = clock.now
        let (machine, changed) = try await transaction("setting the agent status of machine \(machineID)") { connection -> (Machine, Bool) in
            guard
                let before = try await connection.values(
                    "SELECT \(unescaped: Self.machineColumns) FROM machines WHERE id = \(machineID) FOR UPDATE", { try Self.machine(from: $0) }
                ).first
            else {
                throw StoreError.noMachine(machineID)
            }
            // A repeated `started` is news: the agent started again.
            guard status == .started || before.agentStatus != status || !before.agentMessage.isEmpty else { return (before, false) }
            var after = before
            after.agentStatus = status
            after.agentMessage = ""
            if status == .started { after.agentStartedAt = now }
            try await Self.write(connection, [OwnedFields(after)])
            _ = try await Self.append(
                [MachineEvent(revision: 0, kind: .machineChanged, source: .external, machineID: machineID, at: now)], on: connection)
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
        try await transaction(what) { connection in
            var present = Set(try await Self.lockOwnedFields(connection, ids: ids).keys)
            // In the order given: the first that is not there (or was
            // removed just before) fails them all.
            for id in ids {
                guard present.remove(id) != nil else { throw StoreError.noMachine(id) }
            }
            let unique = Array(Set(ids))
            for chunk in Self.chunks(unique) {
                let list = Array(chunk)
                try await connection.execute("DELETE FROM machines WHERE id = ANY(\(list)::text[])")
                try await connection.execute("DELETE FROM schedule WHERE machine_id = ANY(\(list)::text[])")
                try await connection.execute("DELETE FROM status_history WHERE machine_id = ANY(\(list)::text[])")
            }
            _ = try await Self.append(
                ids.map { MachineEvent(revision: 0, kind: .machineRemoved, source: .external, machineID: $0, at: now) }, on: connection)
        }
        logger.debug("machines removed", metadata: ["count": "\(ids.count)"])
        didChange()
    }

    public func machine(id: String) async throws -> Machine? {
        try await withConnection("reading machine \(id)") { connection in
            try await connection.values("SELECT \(unescaped: Self.machineColumns) FROM machines WHERE id = \(id)", Self.machine(from:)).first
        }
    }

    public func machines() async throws -> [Machine] {
        try await withConnection("reading machines") { connection in
            try await connection.values("SELECT \(unescaped: Self.machineColumns) FROM machines ORDER BY id", Self.machine(from:))
        }
    }

    public func machines(of key: CredentialKey) async throws -> [Machine] {
        try await withConnection("reading the machines of \(key)") { connection in
            try await connection.values(
                "SELECT \(unescaped: Self.machineColumns) FROM machines WHERE provider = \(key.provider) AND credential = \(key.name) ORDER BY id",
                Self.machine(from:))
        }
    }

    public func workPairs() async throws -> [CredentialKey] {
        try await withConnection("reading the pairs machines use") { connection in
            try await connection.values(
                // Every controller asks this every third of the lease TTL:
                // one index probe per pair (a loose index scan over
                // machines(provider, credential, id)), not a scan of the fleet.
                """
                WITH RECURSIVE pairs(provider, credential) AS (
                    (SELECT provider, credential FROM machines ORDER BY provider, credential LIMIT 1)
                    UNION ALL
                    SELECT next.provider, next.credential FROM pairs, LATERAL (
                        SELECT provider, credential FROM machines
                        WHERE (provider, credential) > (pairs.provider, pairs.credential)
                        ORDER BY provider, credential LIMIT 1
                    ) AS next
                )
                SELECT provider, credential FROM pairs
                WHERE EXISTS (
                    SELECT 1 FROM machines
                    WHERE machines.provider = pairs.provider AND machines.credential = pairs.credential AND life <> 'dead'
                )
                ORDER BY provider, credential
                """
            ) { row in CredentialKey(provider: try row.at(0), name: try row.at(1)) }
        }
    }

    // MARK: Rows

    /// What an update and an agent report may change, as stored.
    struct OwnedFields: Sendable {
        var id: String
        var provider: String
        var credential: String
        var instanceID: String
        var life: String
        var manual: Bool
        var agentStatus: String
        var agentMessage: String
        var agentStartedAt: Int64?

        init(_ machine: Machine) {
            id = machine.id
            provider = machine.provider
            credential = machine.credential
            instanceID = machine.instanceID
            life = machine.life.rawValue
            manual = machine.manual
            agentStatus = machine.agentStatus.rawValue
            agentMessage = machine.agentMessage
            agentStartedAt = machine.agentStartedAt?.nanosecondsSinceEpoch
        }

        init(_ row: PostgresRandomAccessRow) throws {
            id = try row.at(0)
            provider = try row.at(1)
            credential = try row.at(2)
            instanceID = try row.at(3)
            life = try row.at(4)
            manual = try row.at(5)
            agentStatus = try row.at(6)
            agentMessage = try row.at(7)
            agentStartedAt = try row.at(8)
        }

        /// The fields after an update to `machine` (the life kept when
        /// `keepingLife`); nil when all of them already are so. An agent
        /// status that changes loses its message, and `started` is a start.
        func updated(to machine: Machine, keepingLife: Bool, at now: Timestamp) -> OwnedFields? {
            var after = self
            after.provider = machine.provider
            after.credential = machine.credential
            after.instanceID = machine.instanceID
            if !keepingLife { after.life = machine.life.rawValue }
            after.manual = machine.manual
            if agentStatus != machine.agentStatus.rawValue {
                after.agentStatus = machine.agentStatus.rawValue
                after.agentMessage = ""
                if machine.agentStatus == .started { after.agentStartedAt = now.nanosecondsSinceEpoch }
            }
            let unchanged =
                after.provider == provider && after.credential == credential && after.instanceID == instanceID && after.life == life
                && after.manual == manual && after.agentStatus == agentStatus
            return unchanged ? nil : after
        }
    }

    /// Locks the rows of these machines (those that exist), in id order,
    /// until the transaction ends; returns what an update may change of
    /// them, by id.
    static func lockOwnedFields(_ connection: PostgresConnection, ids: [String]) async throws -> [String: OwnedFields] {
        var rows: [String: OwnedFields] = [:]
        for chunk in chunks(Array(Set(ids)).sorted()) {
            for row in try await connection.values(
                """
                SELECT id, provider, credential, instance_id, life, manual, agent_status, agent_message, agent_started_at
                FROM machines WHERE id = ANY(\(Array(chunk))::text[]) ORDER BY id FOR UPDATE
                """, OwnedFields.init)
            {
                rows[row.id] = row
            }
        }
        return rows
    }

    /// Writes the owned fields of machines that exist.
    static func write(_ connection: PostgresConnection, _ rows: [OwnedFields]) async throws {
        for chunk in chunks(rows) {
            let started = NullableColumn(chunk.map(\.agentStartedAt), placeholder: 0)
            try await connection.execute("""
                UPDATE machines m SET provider = u.provider, credential = u.credential, instance_id = u.instance_id, life = u.life,
                    manual = u.manual, agent_status = u.agent_status, agent_message = u.agent_message,
                    agent_started_at = CASE WHEN u.started_null THEN NULL ELSE u.started END
                FROM UNNEST(
                    \(chunk.map(\.id))::text[], \(chunk.map(\.provider))::text[], \(chunk.map(\.credential))::text[],
                    \(chunk.map(\.instanceID))::text[], \(chunk.map(\.life))::text[], \(chunk.map(\.manual))::bool[],
                    \(chunk.map(\.agentStatus))::text[], \(chunk.map(\.agentMessage))::text[],
                    \(started.values)::bigint[], \(started.nulls)::bool[]
                ) AS u(id, provider, credential, instance_id, life, manual, agent_status, agent_message, started, started_null)
                WHERE m.id = u.id
                """)
        }
    }

    /// Inserts new machines as given, with their interfaces encoded.
    static func insert(_ connection: PostgresConnection, _ machines: [(Machine, [UInt8]?)]) async throws {
        for chunk in chunks(machines) {
            let started = NullableColumn(chunk.map { $0.0.agentStartedAt?.nanosecondsSinceEpoch }, placeholder: 0)
            let updated = NullableColumn(chunk.map { $0.0.instanceStatus.updatedAt?.nanosecondsSinceEpoch }, placeholder: 0)
            let interfaces = NullableColumn(chunk.map { $0.1.map { ByteBuffer(bytes: $0) } }, placeholder: ByteBuffer())
            let errors = NullableColumn(chunk.map { $0.0.pollError }, placeholder: "")
            let machines = chunk.map(\.0)
            try await connection.execute("""
                INSERT INTO machines (id, provider, credential, instance_id, life, manual, agent_status, agent_message, agent_started_at,
                    status_state, status_raw, status_message, status_updated_at, interfaces, poll_error)
                SELECT id, provider, credential, instance_id, life, manual, agent_status, agent_message,
                    CASE WHEN started_null THEN NULL ELSE started END,
                    state, raw, message, CASE WHEN updated_null THEN NULL ELSE updated END,
                    CASE WHEN interfaces_null THEN NULL ELSE interfaces END, CASE WHEN error_null THEN NULL ELSE error END
                FROM UNNEST(
                    \(machines.map(\.id))::text[], \(machines.map(\.provider))::text[], \(machines.map(\.credential))::text[],
                    \(machines.map(\.instanceID))::text[], \(machines.map(\.life.rawValue))::text[], \(machines.map(\.manual))::bool[],
                    \(machines.map(\.agentStatus.rawValue))::text[], \(machines.map(\.agentMessage))::text[],
                    \(started.values)::bigint[], \(started.nulls)::bool[],
                    \(machines.map { Int32($0.instanceStatus.state.rawValue) })::int[], \(machines.map(\.instanceStatus.rawStatus))::text[],
                    \(machines.map(\.instanceStatus.message))::text[], \(updated.values)::bigint[], \(updated.nulls)::bool[],
                    \(interfaces.values)::bytea[], \(interfaces.nulls)::bool[], \(errors.values)::text[], \(errors.nulls)::bool[]
                ) AS u(id, provider, credential, instance_id, life, manual, agent_status, agent_message, started, started_null,
                    state, raw, message, updated, updated_null, interfaces, interfaces_null, error, error_null)
                """)
        }
    }

    /// A machine's columns, in the order ``machine(from:)`` reads them.
    static let machineColumnNames = [
        "id", "provider", "credential", "instance_id", "life", "manual", "agent_status", "agent_message", "agent_started_at",
        "status_state", "status_raw", "status_message", "status_updated_at", "interfaces", "poll_error",
    ]
    static let machineColumns = machineColumnNames.joined(separator: ", ")
    /// The same, of machines `m`.
    static let listedMachineColumns = machineColumnNames.map { "m." + $0 }.joined(separator: ", ")

    static func machine(from row: PostgresRandomAccessRow) throws -> Machine {
        let id: String = try row.at(0)
        let lifeName: String = try row.at(4)
        guard let life = Machine.Life(rawValue: lifeName) else {
            throw StoreError(.internal, "machine \(id) has an unknown life '\(lifeName)'")
        }
        let agentName: String = try row.at(6)
        guard let agentStatus = Machine.AgentStatus(rawValue: agentName) else {
            throw StoreError(.internal, "machine \(id) has an unknown agent status '\(agentName)'")
        }
        return Machine(
            id: id,
            provider: try row.at(1),
            credential: try row.at(2),
            instanceID: try row.at(3),
            life: life,
            manual: try row.at(5),
            agentStatus: agentStatus,
            agentMessage: try row.at(7),
            agentStartedAt: (try row.at(8, as: Int64?.self)).map(Timestamp.init(nanosecondsSinceEpoch:)),
            instanceStatus: try status(at: 9, of: row),
            interfaces: try interfaces(try row.at(13, as: ByteBuffer?.self), machineID: id),
            pollError: try row.at(14))
    }

    /// The status from four columns, from `first` on: state, raw status,
    /// message, updated at.
    static func status(at first: Int, of row: PostgresRandomAccessRow) throws -> InstanceStatusRecord {
        let state: Int = try row.at(first)
        return InstanceStatusRecord(
            state: ProviderV1.InstanceState(rawValue: state) ?? .unspecified,
            rawStatus: try row.at(first + 1),
            message: try row.at(first + 2),
            updatedAt: (try row.at(first + 3, as: Int64?.self)).map(Timestamp.init(nanosecondsSinceEpoch:)))
    }

    static func interfaces(_ buffer: ByteBuffer?, machineID: String) throws -> [ProviderV1.NetworkInterface] {
        try StoredValues.interfaces(buffer.map { Array($0.readableBytesView) }, machineID: machineID)
    }
}

/// A column that may hold NULL, for a multi-row statement: the driver's
/// arrays cannot hold NULL, so the values come with a placeholder where
/// NULL is meant, and flags that say where.
struct NullableColumn<Value> {
    var values: [Value]
    var nulls: [Bool]

    init(_ column: [Value?], placeholder: Value) {
        values = column.map { $0 ?? placeholder }
        nulls = column.map { $0 == nil }
    }
}
