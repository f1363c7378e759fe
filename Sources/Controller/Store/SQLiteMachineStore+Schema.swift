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

    /// Creates the database file 0600 if it is missing (SQLite gives its
    /// -wal and -shm files the database file's mode), and refuses one that
    /// group or others can read or write: it holds credentials.
    static func prepareFile(_ path: String) throws {
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        if fd >= 0 {
            // Exactly 0600 whatever the umask.
            let changed = fchmod(fd, 0o600)
            let chmodErrno = errno
            Glibc.close(fd)
            if changed != 0 {
                throw StoreError("cannot set mode 0600 on database \(path): \(describe(errno: chmodErrno))")
            }
        } else if errno != EEXIST {
            throw StoreError("cannot create database \(path): \(describe(errno: errno))")
        }
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw StoreError("cannot stat database \(path): \(describe(errno: errno))")
        }
        let mode = Int(info.st_mode) & 0o777
        if mode & 0o077 != 0 {
            throw StoreError(
                "database \(path) has mode \(octal(mode)): it holds credentials, so group and others must have no access (chmod 600 \(path))")
        }
    }

    static func octal(_ mode: Int) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    private static func describe(errno code: Int32) -> String {
        String(cString: strerror(code))
    }
}
