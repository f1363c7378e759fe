internal import Core
internal import GRDB
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

extension SQLiteMachineStore {
    /// The schema, one migration per released change. Never edit a
    /// registered migration: add the next one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE machines (
                    id TEXT PRIMARY KEY NOT NULL,
                    provider TEXT NOT NULL,
                    credential TEXT NOT NULL,
                    instance_id TEXT NOT NULL,
                    life TEXT NOT NULL,
                    manual INTEGER NOT NULL,
                    agent_status TEXT NOT NULL,
                    -- ProviderV1.InstanceState's proto number.
                    status_state INTEGER NOT NULL,
                    status_raw TEXT NOT NULL,
                    status_message TEXT NOT NULL,
                    -- Nanoseconds since the Unix epoch; NULL until first written.
                    status_updated_at INTEGER,
                    -- A ProviderV1.InstanceInterfaces message with only its
                    -- interfaces (field 3) set; NULL when there are none.
                    interfaces BLOB,
                    poll_error TEXT
                );
                CREATE TABLE credentials (
                    provider TEXT NOT NULL,
                    name TEXT NOT NULL,
                    auth_type TEXT NOT NULL,
                    -- JSON object of strings. Secrets: the file is 0600.
                    attributes TEXT NOT NULL,
                    expires_at INTEGER,
                    invalid_reason TEXT,
                    PRIMARY KEY (provider, name)
                );
                CREATE TABLE schedule (
                    machine_id TEXT PRIMARY KEY NOT NULL,
                    grp TEXT NOT NULL CHECK (grp IN ('short', 'long')),
                    interval_ns INTEGER NOT NULL,
                    due_ns INTEGER NOT NULL
                );
                -- AUTOINCREMENT: a revision is never reused, even after the
                -- newest rows are gone.
                CREATE TABLE events (
                    revision INTEGER PRIMARY KEY AUTOINCREMENT,
                    kind TEXT NOT NULL,
                    source TEXT NOT NULL,
                    machine_id TEXT NOT NULL DEFAULT '',
                    credential TEXT NOT NULL DEFAULT '',
                    at INTEGER NOT NULL
                );
                """)
        }
        // Juju's agent rule, what the poller changed, and status history.
        migrator.registerMigration("v2") { db in
            try db.execute(sql: """
                -- When the agent last reported started (nanoseconds since the
                -- epoch); NULL when it never has.
                ALTER TABLE machines ADD COLUMN agent_started_at INTEGER;
                -- Said with the agent status (e.g. a provisioning error).
                ALTER TABLE machines ADD COLUMN agent_message TEXT NOT NULL DEFAULT '';
                -- The poller's changes: the value before and after.
                ALTER TABLE events ADD COLUMN old_value TEXT NOT NULL DEFAULT '';
                ALTER TABLE events ADD COLUMN new_value TEXT NOT NULL DEFAULT '';
                -- How many instance statuses were ever written: the sequence
                -- number of the newest in status_history.
                ALTER TABLE machines ADD COLUMN status_seq INTEGER NOT NULL DEFAULT 0;
                -- The last 20 instance statuses written per machine. One
                -- B-tree keyed by (machine, sequence): a write is one insert
                -- and, past 20, one delete.
                CREATE TABLE status_history (
                    machine_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    state INTEGER NOT NULL,
                    raw TEXT NOT NULL,
                    message TEXT NOT NULL,
                    at INTEGER NOT NULL,
                    PRIMARY KEY (machine_id, seq)
                ) WITHOUT ROWID;
                """)
        }
        return migrator
    }

    /// Makes the database's files safe to open: they hold credentials.
    ///
    /// - The directory is created private (0700) when `createDirectory`
    ///   (the default state directory); any other must be this user's or
    ///   root's and not let others rename what it holds.
    /// - The database is created 0600 when missing (never through a
    ///   symbolic link); an existing one must be a regular file of this
    ///   user's that group and others cannot use.
    /// - `-wal` and `-shm` are created here, 0600, before SQLite opens them,
    ///   so nobody else can have made them first and kept them open to read
    ///   what is written; existing ones (and a hot `-journal`) must be ours
    ///   and private too, or the store is refused.
    static func prepareFile(_ path: String, createDirectory: Bool = false) throws {
        let directory = UnixSocket.parentDirectory(of: path)
        do {
            if createDirectory {
                Glibc.close(try PrivatePath.openDirectory(directory))
            } else {
                var info = stat()
                guard stat(directory, &info) == 0 else {
                    throw StoreError(.failedPrecondition, "cannot use store directory \(directory): \(describe(errno: errno))")
                }
                try PrivatePath.checkNoForeignWriters(directory: directory, info)
            }
            Glibc.close(try PrivatePath.openPrivateFile(path, create: true).descriptor)
            for suffix in ["-wal", "-shm"] {
                Glibc.close(try PrivatePath.openPrivateFile(path + suffix, create: true).descriptor)
            }
            var journal = stat()
            if lstat(path + "-journal", &journal) == 0 {
                try PrivatePath.checkPrivateFile(path + "-journal", journal)
            }
        } catch let problem as PrivatePath.Problem {
            throw StoreError(.failedPrecondition, "store \(problem)")
        }
    }

    private static func describe(errno code: Int32) -> String {
        String(cString: strerror(code))
    }
}
