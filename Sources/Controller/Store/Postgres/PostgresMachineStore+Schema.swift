internal import Logging
internal import PostgresNIO

extension PostgresMachineStore {
    /// One released change of the schema: statements run in one transaction.
    struct Migration {
        var version: Int32
        var statements: [String]
    }

    /// The schema, one migration per released change. Never edit a
    /// registered migration: add the next one. Keys compare byte by byte
    /// (`COLLATE "C"`), so that listings and pages come in the same order
    /// as from SQLite whatever the database's locale.
    static let migrations: [Migration] = [
        Migration(version: 1, statements: [
            """
            CREATE TABLE machines (
                id TEXT COLLATE "C" PRIMARY KEY,
                provider TEXT COLLATE "C" NOT NULL,
                credential TEXT COLLATE "C" NOT NULL,
                instance_id TEXT NOT NULL,
                life TEXT NOT NULL,
                manual BOOLEAN NOT NULL,
                agent_status TEXT NOT NULL,
                -- ProviderV1.InstanceState's proto number.
                status_state INTEGER NOT NULL,
                status_raw TEXT NOT NULL,
                status_message TEXT NOT NULL,
                -- Nanoseconds since the Unix epoch; NULL until first written.
                status_updated_at BIGINT,
                -- A ProviderV1.InstanceInterfaces message with only its
                -- interfaces (field 3) set; NULL when there are none.
                interfaces BYTEA,
                poll_error TEXT,
                -- When the agent last reported started; NULL when it never has.
                agent_started_at BIGINT,
                agent_message TEXT NOT NULL DEFAULT '',
                -- How many instance statuses were ever written: the sequence
                -- number of the newest in status_history.
                status_seq BIGINT NOT NULL DEFAULT 0
            )
            """,
            // A pair's machines in id order: what a lease holder polls.
            "CREATE INDEX machines_pair ON machines (provider, credential, id)",
            """
            CREATE TABLE credentials (
                provider TEXT COLLATE "C" NOT NULL,
                name TEXT COLLATE "C" NOT NULL,
                auth_type TEXT NOT NULL,
                -- Sealed (sealed:v1:…) when a credential key is configured,
                -- else a JSON object of strings.
                attributes TEXT NOT NULL,
                expires_at BIGINT,
                invalid_reason TEXT,
                PRIMARY KEY (provider, name)
            )
            """,
            """
            CREATE TABLE schedule (
                machine_id TEXT COLLATE "C" PRIMARY KEY,
                grp TEXT NOT NULL CHECK (grp IN ('short', 'long')),
                interval_ns BIGINT NOT NULL,
                due_ns BIGINT NOT NULL
            )
            """,
            // Revisions come from revision_counter, never from the rows:
            // they are not reused once the newest rows are pruned.
            """
            CREATE TABLE events (
                revision BIGINT PRIMARY KEY,
                kind TEXT NOT NULL,
                source TEXT NOT NULL,
                machine_id TEXT NOT NULL DEFAULT '',
                credential TEXT NOT NULL DEFAULT '',
                at BIGINT NOT NULL,
                old_value TEXT NOT NULL DEFAULT '',
                new_value TEXT NOT NULL DEFAULT ''
            )
            """,
            // The last 20 instance statuses written per machine.
            """
            CREATE TABLE status_history (
                machine_id TEXT COLLATE "C" NOT NULL,
                seq BIGINT NOT NULL,
                state INTEGER NOT NULL,
                raw TEXT NOT NULL,
                message TEXT NOT NULL,
                at BIGINT NOT NULL,
                PRIMARY KEY (machine_id, seq)
            )
            """,
            // The last revision given. Its one row is locked by each
            // transaction that appends events, from taking its revisions to
            // its commit: appenders commit in revision order.
            """
            CREATE TABLE revision_counter (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                value BIGINT NOT NULL
            )
            """,
            "INSERT INTO revision_counter (id, value) VALUES (1, 0)",
            // Who polls which (provider, credential) pair; times are the
            // database's clock (docs/DESIGN.md §8).
            """
            CREATE TABLE leases (
                -- "provider/name"
                key TEXT COLLATE "C" PRIMARY KEY,
                provider TEXT NOT NULL,
                credential TEXT NOT NULL,
                holder TEXT NOT NULL,
                -- Raised each time the lease changes hands: the fence.
                epoch BIGINT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL
            )
            """,
            """
            CREATE TABLE controllers (
                holder TEXT COLLATE "C" PRIMARY KEY,
                host TEXT NOT NULL,
                pid INTEGER NOT NULL,
                version TEXT NOT NULL,
                last_renewal TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL
            )
            """,
        ])
    ]

    /// The advisory lock migrations take: "instpoll" in ASCII.
    static let migrationLock: Int64 = 0x696e_7374_706f_6c6c

    /// Brings the schema up to date: each migration not yet recorded in
    /// `schema_migrations` runs in a transaction of its own under a
    /// transaction-scoped advisory lock, so that controllers starting
    /// together apply each exactly once. Idempotent. Uses a connection of
    /// its own: it does not need ``run()``, and a database that cannot be
    /// reached fails it at once, saying why.
    public func migrate() async throws {
        let connection: PostgresConnection
        do {
            connection = try await connect()
        } catch {
            let kind = Self.kind(of: error)
            let verb = kind == .unavailable ? "cannot reach" : "cannot connect to"
            throw StoreError(kind, "\(verb) PostgreSQL at \(location): \(Self.describe(error))")
        }
        // Closed before it goes, whatever happened.
        let outcome: Result<(applied: [Int32], newest: Int32), any Error>
        do {
            outcome = .success(try await Self.migrate(on: connection))
        } catch {
            outcome = .failure(error)
        }
        try? await connection.close()
        let applied: [Int32]
        let newest: Int32
        do {
            (applied, newest) = try outcome.get()
        } catch let error as StoreError {
            throw error
        } catch {
            throw explained("migrating the schema", error)
        }
        let known = Self.migrations.last?.version ?? 0
        if newest > known {
            // A newer controller migrated first (a rolling upgrade):
            // migrations only add, so this one keeps working.
            logger.warning(
                "the PostgreSQL schema is newer than this controller's",
                metadata: ["store": "\(location)", "schema": "\(newest)", "known": "\(known)"])
        }
        logger.debug("machine store migrated", metadata: ["store": "\(location)", "applied": "\(applied)"])
    }

    /// Applies the migrations not yet recorded; returns those it applied
    /// and the newest version recorded.
    private static func migrate(on connection: PostgresConnection) async throws -> (applied: [Int32], newest: Int32) {
        var applied: [Int32] = []
        for migration in Self.migrations {
            let ran = try await Self.transaction(on: connection) { connection -> Bool in
                try await connection.execute("SELECT pg_advisory_xact_lock(\(Self.migrationLock))")
                try await connection.execute("""
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version INTEGER PRIMARY KEY,
                        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                    )
                    """)
                let done = try await connection.rows("SELECT 1 FROM schema_migrations WHERE version = \(migration.version)")
                guard done.isEmpty else { return false }
                for statement in migration.statements { try await connection.execute(PostgresQuery(unsafeSQL: statement)) }
                try await connection.execute("INSERT INTO schema_migrations (version) VALUES (\(migration.version))")
                return true
            }
            if ran { applied.append(migration.version) }
        }
        let newest = try await connection.values("SELECT COALESCE(max(version), 0) FROM schema_migrations") { try $0.at(0, as: Int32.self) }
        return (applied, newest.first ?? 0)
    }
}
