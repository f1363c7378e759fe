internal import Core
internal import Foundation
public import Logging
internal import NIOConcurrencyHelpers
internal import NIOCore
internal import NIOPosix
internal import PostgresNIO
public import ServiceLifecycle

/// The shared machine store: one PostgreSQL database that several
/// controllers use at once, dividing the work by lease (docs/DESIGN.md §6.1,
/// §8). It keeps the same tables, events and errors as
/// ``SQLiteMachineStore``; what differs is how writers are ordered and how
/// other controllers hear of a change.
///
/// - Revisions: each transaction that appends events takes its revisions
///   from the one-row `revision_counter` as its last step before inserting
///   them. The row lock, held to commit, orders appenders, so revisions
///   become visible in commit order: a reader following `revision > N`
///   never skips one that commits later with a lower number.
/// - Changes reach every controller through `NOTIFY instancepoller_events`
///   (sent by each transaction that appended events) on a LISTEN
///   connection that ``run()`` keeps open and reopens after a restart of
///   the database. A missed notification only delays: the events log stays
///   the truth.
/// - Leases and fencing: see ``LeaseStore`` and `+Leases.swift`.
///
/// Nothing here does I/O before ``run()``; ``migrate()`` brings the schema
/// up to date. The password is only handed to the driver: no message or
/// log holds it, nor a credential's attributes.
public final class PostgresMachineStore: LeaseStore, Service {
    public let location: PostgresLocation
    let client: PostgresClient
    let clock: any PollClock
    let logger: Logger
    /// Seals credential attributes at rest; nil: they are stored as JSON.
    let sealer: CredentialSealer?
    /// How long an operation waits for a pooled connection before it fails
    /// as unavailable (the pool itself would wait up to a minute).
    let connectionWait: Duration
    private let password: String?
    private let state = NIOLockedValueBox(State())
    private let connectionIDs = NIOLockedValueBox(0)

    /// The channel every controller's transactions notify on.
    static let channel = "instancepoller_events"
    /// Connections for queries: small, because every controller of a fleet
    /// holds its own pool against one server (and memory counts).
    static let maximumConnections = 4

    private struct State {
        var changeHandler: (@Sendable () -> Void)?
        var running = RunState.notStarted
        var listening = false
        var listeningWaiters: [CheckedContinuation<Void, Never>] = []
        /// Why the last attempt to reach the server failed, while it fails.
        var unreachable: String?
    }

    private enum RunState { case notStarted, running, ended }

    /// `connectionWait`: how long an operation may wait for a connection
    /// while the database cannot be reached before it fails as
    /// ``StoreError/Kind/unavailable``.
    public init(
        location: PostgresLocation, password: String?, sealer: CredentialSealer?, clock: any PollClock, logger: Logger,
        connectionWait: Duration = .seconds(10)
    ) {
        self.location = location
        self.password = password
        self.sealer = sealer
        self.clock = clock
        self.logger = logger
        self.connectionWait = connectionWait
        var configuration: PostgresClient.Configuration
        if let directory = location.socketDirectory {
            configuration = PostgresClient.Configuration(
                unixSocketPath: Self.socketPath(directory: directory, port: location.port), username: location.user,
                password: password, database: location.database)
        } else {
            let tls: PostgresClient.Configuration.TLS = switch location.tls {
            case .disable: .disable
            case .prefer: .prefer(.makeClientConfiguration())
            case .require: .require(.makeClientConfiguration())
            }
            configuration = PostgresClient.Configuration(
                host: location.host, port: location.port, username: location.user, password: password, database: location.database,
                tls: tls)
        }
        configuration.options.maximumConnections = Self.maximumConnections
        configuration.options.additionalStartupParameters = [("application_name", "instancepoller")]
        // The driver's own logs may carry a query's values: it logs nothing.
        client = PostgresClient(configuration: configuration, backgroundLogger: Self.quiet)
    }

    /// `dir/.s.PGSQL.<port>`, as libpq names a server's socket.
    static func socketPath(directory: String, port: Int) -> String {
        (directory.hasSuffix("/") ? directory : directory + "/") + ".s.PGSQL.\(port)"
    }

    /// Called after every committed change of this process that appended to
    /// the events log, and on every notification from any controller
    /// (including this one), and after the LISTEN connection was opened
    /// again: changes may have been missed meanwhile.
    public func setChangeHandler(_ handler: (@Sendable () -> Void)?) {
        state.withLockedValue { $0.changeHandler = handler }
    }

    func didChange() {
        state.withLockedValue { $0.changeHandler }?()
    }

    // MARK: Running

    /// Runs the connection pool and the LISTEN connection until graceful
    /// shutdown or cancellation. Every other method but ``migrate()`` needs
    /// it running: one called before waits for it (at most
    /// ``connectionWait``), one called after fails as unavailable.
    public func run() async throws {
        let first = state.withLockedValue { state -> Bool in
            guard state.running == .notStarted else { return false }
            state.running = .running
            return true
        }
        guard first else { throw StoreError(.failedPrecondition, "the PostgreSQL store at \(location) was already run") }
        logger.debug("machine store running", metadata: ["store": "\(location)"])
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.client.run() }
                group.addTask { await self.listen() }
            }
        }
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.running = .ended
            state.listening = false
            defer { state.listeningWaiters = [] }
            return state.listeningWaiters
        }
        for waiter in waiters { waiter.resume() }
        logger.debug("machine store stopped", metadata: ["store": "\(location)"])
    }

    /// Returns once the LISTEN connection listens (or ``run()`` has ended):
    /// from then on, other controllers' changes reach the change handler.
    public func untilListening() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLockedValue { state -> Bool in
                if state.listening || state.running == .ended { return true }
                state.listeningWaiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Keeps a connection listening on ``channel``, opening it again (with
    /// backoff) whenever it fails, until cancelled. A failure is logged as a
    /// warning once, then at most once a minute while it lasts.
    private func listen() async {
        var failures = 0
        var lastWarning: ContinuousClock.Instant?
        var opened = false
        while !Task.isCancelled {
            do {
                let connection = try await connect()
                // Closed before it goes, however listening ended.
                let ended: Result<Void, any Error>
                do {
                    try await listen(on: connection) {
                        if failures > 0 {
                            logger.info(
                                "PostgreSQL reachable again: listening for changes",
                                metadata: ["store": "\(location)", "attempts": "\(failures)"])
                        }
                        failures = 0
                        lastWarning = nil
                        // Changes made while no connection listened were not heard.
                        if opened { didChange() }
                        opened = true
                    }
                    ended = .success(())
                } catch {
                    ended = .failure(error)
                }
                try? await connection.close()
                try ended.get()
            } catch {
                state.withLockedValue { state in
                    state.listening = false
                    state.unreachable = Self.describe(error)
                }
                if Task.isCancelled { break }
                failures += 1
                let now = ContinuousClock.now
                let metadata: Logger.Metadata = ["store": "\(location)", "error": "\(Self.describe(error))", "attempts": "\(failures)"]
                if lastWarning.map({ $0.duration(to: now) >= .seconds(60) }) ?? true {
                    logger.warning("cannot listen for changes in PostgreSQL; retrying", metadata: metadata)
                    lastWarning = now
                } else {
                    logger.debug("cannot listen for changes in PostgreSQL; retrying", metadata: metadata)
                }
            }
            // 0.1 s, doubling to 5 s.
            let backoff = Duration.milliseconds(100 * (1 << min(max(failures - 1, 0), 6)))
            do {
                try await Task.sleep(for: min(backoff, .seconds(5)))
            } catch {
                break
            }
        }
        state.withLockedValue { $0.listening = false }
    }

    /// Listens on `connection` until it fails: `listening` runs once the
    /// server listens, every notification calls the change handler.
    private func listen(on connection: PostgresConnection, listening: () -> Void) async throws {
        try await connection.listen(on: Self.channel) { notifications in
            let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
                state.listening = true
                state.unreachable = nil
                defer { state.listeningWaiters = [] }
                return state.listeningWaiters
            }
            for waiter in waiters { waiter.resume() }
            listening()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await _ in notifications { self.didChange() }
                    // The sequence ends when the connection does.
                    throw ConnectionEnded()
                }
                // A connection that died without a word (a network gone)
                // shows only when it is used.
                group.addTask {
                    while true {
                        try await Task.sleep(for: .seconds(30))
                        try await connection.execute("SELECT 1")
                    }
                }
                try await group.next()
            }
        }
    }

    /// A connection of its own, outside the pool: for LISTEN and for the
    /// migrations, whose failure to connect says why at once (the pool
    /// retries quietly instead).
    func connect() async throws -> PostgresConnection {
        var configuration: PostgresConnection.Configuration
        if let directory = location.socketDirectory {
            configuration = PostgresConnection.Configuration(
                unixSocketPath: Self.socketPath(directory: directory, port: location.port), username: location.user,
                password: password, database: location.database)
        } else {
            let tls: PostgresConnection.Configuration.TLS = switch location.tls {
            case .disable: .disable
            case .prefer: .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            case .require: .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            }
            configuration = PostgresConnection.Configuration(
                host: location.host, port: location.port, username: location.user, password: password, database: location.database,
                tls: tls)
        }
        configuration.options.additionalStartupParameters = [("application_name", "instancepoller")]
        let id = connectionIDs.withLockedValue { id -> Int in
            id += 1
            return id
        }
        return try await PostgresConnection.connect(configuration: configuration, id: id, logger: Self.quiet)
    }

    // MARK: Access

    /// One transaction on a pooled connection: committed when `body`
    /// returns, rolled back when it throws. Any failure but our own
    /// StoreError (or a cancellation) becomes a StoreError saying what was
    /// being done.
    func transaction<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await withConnection(what) { connection in
            try await Self.transaction(on: connection, body)
        }
    }

    static func transaction<T: Sendable>(on connection: PostgresConnection, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await connection.execute("BEGIN")
        do {
            let value = try await body(connection)
            try await connection.execute("COMMIT")
            return value
        } catch {
            do {
                try await connection.execute("ROLLBACK")
            } catch {
                // A connection left in a transaction must not go back to the pool.
                _ = connection.close() as EventLoopFuture<Void>
            }
            throw error
        }
    }

    /// Statements outside a transaction (reads, single statements).
    func withConnection<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        // Before run() (services start together), an operation waits for
        // it as it would for a connection.
        if state.withLockedValue({ $0.running }) == .ended {
            throw StoreError(.unavailable, "\(what) in \(location): the store has stopped")
        }
        do {
            return try await leased(body)
        } catch let error as StoreError {
            throw error
        } catch let error as CancellationError {
            throw error
        } catch {
            throw explained(what, error)
        }
    }

    /// A StoreError for a failure of the database while doing `what`.
    func explained(_ what: String, _ error: any Error) -> StoreError {
        StoreError(Self.kind(of: error), "\(what) in \(location): \(Self.describe(error))")
    }

    /// No pooled connection could be had: the pool could not connect, or
    /// none came within ``connectionWait``.
    struct Unreachable: Error, CustomStringConvertible {
        /// Why the last attempt to connect failed, when known.
        var cause: String?
        var waited: Duration?
        var description: String {
            "cannot reach PostgreSQL: \(cause ?? "no connection could be made")" + (waited.map { " (waited \($0))" } ?? "")
        }
    }

    /// The LISTEN connection ended without an error.
    struct ConnectionEnded: Error, CustomStringConvertible {
        var description: String { "the connection to the server ended" }
    }

    private enum LeaseWait { case waiting, leased, expired }

    /// Runs `body` on a pooled connection, waiting at most
    /// ``connectionWait`` for one.
    private func leased<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let wait = NIOLockedValueBox(LeaseWait.waiting)
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                do {
                    return try await self.client.withConnection { connection in
                        let mine = wait.withLockedValue { wait -> Bool in
                            guard wait == .waiting else { return false }
                            wait = .leased
                            return true
                        }
                        guard mine else { throw CancellationError() }
                        return try await body(connection)
                    }
                } catch {
                    if wait.withLockedValue({ $0 }) == .leased { throw error }
                    if Task.isCancelled { throw CancellationError() }
                    // The pool's own errors (it stopped, or gave up
                    // connecting) say nothing of why.
                    throw Unreachable(cause: self.state.withLockedValue { $0.unreachable })
                }
            }
            group.addTask {
                do {
                    try await Task.sleep(for: self.connectionWait)
                } catch {
                    // Cancelled: the operation's own outcome stands (it may
                    // have committed already).
                    return nil
                }
                let expired = wait.withLockedValue { wait -> Bool in
                    guard wait == .waiting else { return false }
                    wait = .expired
                    return true
                }
                if expired { throw Unreachable(cause: self.state.withLockedValue { $0.unreachable }, waited: self.connectionWait) }
                return nil
            }
            while let result = try await group.next() {
                if let value = result {
                    group.cancelAll()
                    return value
                }
            }
            throw CancellationError()
        }
    }

    // MARK: Errors

    /// What a failure means for the caller: a server that cannot be
    /// reached, is shutting down or short of resources, and a transaction
    /// that lost a serialization race or a deadlock, may pass when tried
    /// again (unavailable); a unique key already taken is a duplicate;
    /// another constraint, a refused login or a read-only server is a failed
    /// precondition; too long a value an invalid argument; anything else
    /// internal.
    static func kind(of error: any Error) -> StoreError.Kind {
        if let error = error as? PSQLError {
            switch error.code {
            case .server:
                return kind(sqlState: error.serverInfo?[.sqlState] ?? "")
            case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .poolClosed, .queryCancelled:
                return .unavailable
            case .sslUnsupported, .failedToAddSSLHandler, .unsupportedAuthMechanism, .authMechanismRequiresPassword, .saslError:
                return .failedPrecondition
            case .tooManyParameters:
                return .invalidArgument
            default:
                return .internal
            }
        }
        switch error {
        case is Unreachable, is ConnectionEnded, is NIOConnectionError, is IOError, is ChannelError:
            return .unavailable
        default:
            return .internal
        }
    }

    /// The kind of a server error by its SQLSTATE.
    static func kind(sqlState: String) -> StoreError.Kind {
        switch sqlState {
        case "23505": return .alreadyExists
        // serialization_failure, deadlock_detected
        case "40001", "40P01": return .unavailable
        // string_data_right_truncation, character_not_in_repertoire (a NUL),
        // untranslatable_character
        case "22001", "22021", "22P05": return .invalidArgument
        // read_only_sql_transaction (a standby), insufficient_privilege,
        // invalid_catalog_name (no such database)
        case "25006", "42501", "3D000": return .failedPrecondition
        default: break
        }
        switch sqlState.prefix(2) {
        // integrity constraints
        case "23": return .failedPrecondition
        // program limits (too long a value, too complex a statement)
        case "54": return .invalidArgument
        // connection exceptions, insufficient resources (disk full, out of
        // memory, too many connections), operator intervention (shutting
        // down, starting up, cancelled), system errors (I/O)
        case "08", "53", "57", "58": return .unavailable
        // invalid authorization (a wrong password)
        case "28": return .failedPrecondition
        default: return .internal
        }
    }

    /// A failure in words. The driver's errors do not describe themselves
    /// (their debug text holds the query and its values, which may be
    /// secrets): only the server's message and SQLSTATE, or the cause of a
    /// connection failure, are taken.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            switch error.code {
            case .server:
                let message = error.serverInfo?[.message] ?? "server error"
                guard let sqlState = error.serverInfo?[.sqlState] else { return message }
                return "\(message) (SQLSTATE \(sqlState))"
            case .connectionError:
                return error.underlying.map(describe) ?? "the connection failed"
            case .serverClosedConnection:
                return "the server closed the connection" + (error.underlying.map { ": " + describe($0) } ?? "")
            case .clientClosedConnection:
                return "the connection was closed"
            case .uncleanShutdown:
                return "the connection ended uncleanly"
            case .poolClosed:
                return "the connection pool has stopped"
            case .queryCancelled:
                return "the query was cancelled"
            case .sslUnsupported:
                return "the server does not offer TLS (sslmode=require)"
            case .authMechanismRequiresPassword:
                return "the server asks for a password and none is set (store_password_file, PGPASSWORD or ~/.pgpass)"
            case .unsupportedAuthMechanism:
                return "the server asks for an authentication method this client does not support"
            case .saslError:
                return "SCRAM authentication failed"
            default:
                return "database error (\(error.code))"
            }
        }
        if let error = error as? NIOConnectionError {
            if let failure = error.connectionErrors.first { return describe(failure.error) }
            if let lookup = error.dnsAError ?? error.dnsAAAAError { return "cannot resolve \(error.host): \(describe(lookup))" }
            return "cannot connect to \(error.host):\(error.port)"
        }
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if error is PostgresDecodingError { return "a value read back has an unexpected type" }
        return "\(error)"
    }

    /// The driver logs nothing: its messages may hold a query's values.
    static let quiet = Logger(label: "instancepoller.postgres") { _ in SwiftLogNoOpLogHandler() }
}

// MARK: - Statements

extension PostgresConnection {
    /// Runs a statement and reads all of its rows: an error raised while
    /// the rows come surfaces here, not later.
    @discardableResult
    func rows(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await self.query(query, logger: PostgresMachineStore.quiet).collect()
    }

    func execute(_ query: PostgresQuery) async throws {
        _ = try await rows(query)
    }

    /// Makes each row into a value as it comes, so that a fleet's rows are
    /// never all held at once.
    func values<T>(_ query: PostgresQuery, _ make: (PostgresRandomAccessRow) throws -> T) async throws -> [T] {
        var values: [T] = []
        for try await row in try await self.query(query, logger: PostgresMachineStore.quiet) {
            values.append(try make(row.makeRandomAccess()))
        }
        return values
    }
}

extension PostgresRandomAccessRow {
    /// The value of column `index` (as the statement lists them).
    func at<T: PostgresDecodable>(_ index: Int, as _: T.Type = T.self) throws -> T {
        try self[index].decode(T.self)
    }
}
