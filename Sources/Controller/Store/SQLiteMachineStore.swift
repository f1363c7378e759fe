internal import Core
public import Logging
internal import GRDB
internal import NIOConcurrencyHelpers

/// The embedded machine store: one SQLite file in WAL mode, through GRDB
/// (docs/DESIGN.md §6.1).
///
/// Each change and its entry in the events log are written in one
/// transaction, begun IMMEDIATE so that writers never interleave: revisions
/// then increase monotonically even when several processes write the same
/// file. Changes made by another process reach this one through the events
/// log (``MachineWatcher``).
///
/// The file holds credentials: it is created 0600, and one that group or
/// others can access is refused.
public final class SQLiteMachineStore: MachineStore {
    /// The database file, or ":memory:".
    public let path: String
    let writer: any DatabaseWriter
    let clock: any PollClock
    let logger: Logger
    /// Seals credential attributes at rest; nil: they are stored as JSON
    /// (the file is 0600).
    let sealer: CredentialSealer?
    private let changeHandler = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)

    /// Opens (creating it if needed) the database at `path` and brings its
    /// schema up to date. `createDirectory`: its directory is created
    /// private (0700) when missing, as the default state directory is.
    /// `busyTimeout`: how long a write waits for another connection's write
    /// lock before it fails as ``StoreError/Kind/unavailable``.
    public convenience init(
        path: String, createDirectory: Bool = false, busyTimeout: Duration = .seconds(10), sealer: CredentialSealer? = nil,
        clock: any PollClock, logger: Logger
    ) throws {
        try Self.prepareFile(path, createDirectory: createDirectory)
        var configuration = Configuration()
        // Another process may hold the write lock for a moment.
        configuration.busyMode = .timeout(Double(busyTimeout.totalNanoseconds) / 1e9)
        // Memory: at most two pooled readers, and a 2 MiB page cache per
        // connection (SQLite's default is 8 MiB each); the OS page cache
        // keeps the file hot anyway.
        configuration.maximumReaderCount = 2
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA cache_size = -2048") }
        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw StoreError(Self.kind(of: error), "cannot open database \(path): \(error)")
        }
        try self.init(writer: pool, path: path, sealer: sealer, clock: clock, logger: logger)
    }

    /// A private in-memory store, gone when released; for tests and
    /// throwaway runs.
    public static func inMemory(sealer: CredentialSealer? = nil, clock: any PollClock, logger: Logger) throws -> SQLiteMachineStore {
        let queue: DatabaseQueue
        do {
            queue = try DatabaseQueue()
        } catch {
            throw StoreError(Self.kind(of: error), "cannot open an in-memory database: \(error)")
        }
        return try SQLiteMachineStore(writer: queue, path: ":memory:", sealer: sealer, clock: clock, logger: logger)
    }

    private init(writer: any DatabaseWriter, path: String, sealer: CredentialSealer?, clock: any PollClock, logger: Logger) throws {
        self.writer = writer
        self.sealer = sealer
        self.path = path
        self.clock = clock
        self.logger = logger
        do {
            try Self.migrator.migrate(writer)
        } catch {
            throw StoreError(Self.kind(of: error), "cannot migrate database \(path): \(error)")
        }
        logger.debug("machine store opened", metadata: ["path": "\(path)"])
    }

    /// Called after every committed change that appended to the events log,
    /// e.g. to nudge a ``MachineWatcher`` so that this process's own changes
    /// are seen at once. Changes from other processes are not reported here.
    public func setChangeHandler(_ handler: (@Sendable () -> Void)?) {
        changeHandler.withLockedValue { $0 = handler }
    }

    /// Closes the database (checkpointing the WAL). Later calls fail.
    public func close() throws {
        do {
            try writer.close()
        } catch {
            throw StoreError(Self.kind(of: error), "cannot close database \(path): \(error)")
        }
        logger.debug("machine store closed", metadata: ["path": "\(path)"])
    }

    // MARK: Access

    /// One write transaction; any failure but our own StoreError (or a
    /// cancellation) becomes a StoreError saying what was being done.
    func write<T: Sendable>(_ what: String, _ body: @Sendable (Database) throws -> T) async throws -> T {
        try await explained(what) { try await writer.write(body) }
    }

    func read<T: Sendable>(_ what: String, _ body: @Sendable (Database) throws -> T) async throws -> T {
        try await explained(what) { try await writer.read(body) }
    }

    private func explained<T>(_ what: String, _ operation: () async throws -> T) async throws -> T {
        do {
            return try await operation()
        } catch let error as StoreError {
            throw error
        } catch let error as CancellationError {
            throw error
        } catch {
            throw StoreError(Self.kind(of: error), "\(what) in \(path): \(error)")
        }
    }

    func didChange() {
        changeHandler.withLockedValue { $0 }?()
    }

    /// What a failure of SQLite means for the caller: a lock held past the
    /// busy timeout or a failed or full disk may pass if tried again
    /// (unavailable); a unique key already taken is a duplicate; another
    /// constraint, or a file that is read-only, cannot be opened or is
    /// refused, is a failed precondition; too big a value an invalid
    /// argument; anything else (or a failure that is not SQLite's) internal.
    static func kind(of error: any Error) -> StoreError.Kind {
        guard let error = error as? DatabaseError else { return .internal }
        switch error.resultCode {
        case .SQLITE_BUSY, .SQLITE_LOCKED, .SQLITE_IOERR, .SQLITE_FULL, .SQLITE_PROTOCOL:
            return .unavailable
        case .SQLITE_CONSTRAINT:
            switch error.extendedResultCode {
            case .SQLITE_CONSTRAINT_PRIMARYKEY, .SQLITE_CONSTRAINT_UNIQUE: return .alreadyExists
            default: return .failedPrecondition
            }
        case .SQLITE_READONLY, .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_AUTH:
            return .failedPrecondition
        case .SQLITE_TOOBIG:
            return .invalidArgument
        default:
            return .internal
        }
    }
}

// MARK: - Rows

extension SQLiteMachineStore {
    /// Every row of `sql` made into a value as it is read: a fleet's rows
    /// are never all held at once (100 000 machine rows are tens of MB).
    static func all<T>(_ db: Database, _ sql: String, arguments: StatementArguments = [], _ make: (Row) throws -> T) throws -> [T] {
        var values: [T] = []
        let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
        while let row = try rows.next() { values.append(try make(row)) }
        return values
    }

    /// Rows per multi-row statement: 500 rows of 8 values stay far below
    /// SQLite's limit of 32 766 parameters. The statements are cached by
    /// size: a sweep's batches are mostly of one size.
    static let rowsPerStatement = 500

    static func chunks<T>(_ items: [T]) -> [ArraySlice<T>] {
        stride(from: 0, to: items.count, by: rowsPerStatement).map { items[$0..<min($0 + rowsPerStatement, items.count)] }
    }

    /// "(?, ?), (?, ?)" for 2 rows of 2.
    static func placeholders(rows: Int, columns: Int) -> String {
        let row = "(" + Array(repeating: "?", count: columns).joined(separator: ", ") + ")"
        return Array(repeating: row, count: rows).joined(separator: ", ")
    }

    /// Inserts `rows` (each the values of `target`'s columns) a few hundred
    /// per statement; returns the last row id (0 when there were none).
    @discardableResult
    static func insert(_ db: Database, into target: String, _ rows: [[(any DatabaseValueConvertible)?]]) throws -> Int64 {
        guard let width = rows.first?.count else { return 0 }
        for chunk in chunks(rows) {
            try db.cachedStatement(sql: "INSERT INTO \(target) VALUES \(placeholders(rows: chunk.count, columns: width))")
                .execute(arguments: StatementArguments(chunk.joined()))
        }
        return db.lastInsertedRowID
    }
}
