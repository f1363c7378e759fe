internal import Core
internal import Foundation
internal import GRDB
internal import Logging
internal import SwiftProtobuf

/// Machines: adding, changing, removing and reading them, and making them
/// from their rows.
extension SQLiteMachineStore {
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
                    guard update else { throw StoreError.machineExists(machine.id) }
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
            throw StoreError.noMachine(machine.id)
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
                throw StoreError.noMachine(machineID)
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
                if db.changesCount == 0 { throw StoreError.noMachine(id) }
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

    public func machines(of key: CredentialKey) async throws -> [Machine] {
        try await read("reading the machines of \(key)") { db in
            try Self.all(
                db, "SELECT * FROM machines WHERE provider = ? AND credential = ? ORDER BY id",
                arguments: [key.provider, key.name], Self.machine(from:))
        }
    }

    public func workPairs() async throws -> [CredentialKey] {
        try await read("reading the pairs machines use") { db in
            try Self.all(
                db, "SELECT DISTINCT provider, credential FROM machines WHERE life != 'dead' ORDER BY provider, credential"
            ) { row in CredentialKey(provider: try row.decode(atIndex: 0), name: try row.decode(atIndex: 1)) }
        }
    }

    static func exists(_ db: Database, machineID: String) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM machines WHERE id = ?)", arguments: [machineID]) ?? false
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

    static func machine(from row: Row) throws -> Machine {
        let id: String = try row.decode(forColumn: "id")
        let lifeName: String = try row.decode(forColumn: "life")
        guard let life = Machine.Life(rawValue: lifeName) else {
            throw StoreError(.internal, "machine \(id) has an unknown life '\(lifeName)'")
        }
        let agentName: String = try row.decode(forColumn: "agent_status")
        guard let agentStatus = Machine.AgentStatus(rawValue: agentName) else {
            throw StoreError(.internal, "machine \(id) has an unknown agent status '\(agentName)'")
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

    static func encode(interfaces: [ProviderV1.NetworkInterface], machineID: String) throws -> Data? {
        try StoredValues.encode(interfaces: interfaces, machineID: machineID).map { Data($0) }
    }

    static func interfaces(from row: Row, machineID: String) throws -> [ProviderV1.NetworkInterface] {
        try interfaces(try row.decode(forColumn: "interfaces"), machineID: machineID)
    }

    static func interfaces(_ data: Data?, machineID: String) throws -> [ProviderV1.NetworkInterface] {
        try StoredValues.interfaces(data, machineID: machineID)
    }
}
