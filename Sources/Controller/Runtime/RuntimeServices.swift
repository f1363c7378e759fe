internal import Core
internal import Logging
internal import ServiceLifecycle
internal import UnixSignals
internal import NIOConcurrencyHelpers

// The controller's services, in the order of its one service group (see
// ``ControllerRuntime``): store, shims, poller, signals, metrics server,
// control server, then the announcement (and `until`, for embedders).

/// Opened once a service of the group has started; the service after it
/// in the group waits for that.
final class StartGate: Sendable {
    private let opened = AsyncStream.makeStream(of: Void.self)

    func open() {
        opened.continuation.finish()
    }

    /// Returns once open, or at once when the group shuts down gracefully
    /// or the task is cancelled (the service then runs only to stop).
    func wait() async {
        for await _ in opened.stream.cancelOnGracefulShutdown() {}
    }
}

/// One of the controller's services in its group: started once the service
/// before it has started, so that the group starts in dependency order (it
/// stops in reverse by itself). Its start and stop are logged at debug
/// level with its name.
struct RuntimeService: Service {
    let name: String
    let base: any Service
    let after: StartGate?
    let started = StartGate()
    let logger: Logger

    func run() async throws {
        await after?.wait()
        let metadata: Logger.Metadata = ["service": "\(name)"]
        logger.debug("starting service", metadata: metadata)
        defer { logger.debug("service stopped", metadata: metadata) }
        try await withGracefulShutdownHandler {
            guard let signalling = base as? any SignalsReady else {
                started.open()
                try await base.run()
                return
            }
            // Started once it says it is ready.
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    await signalling.ready.wait()
                    started.open()
                }
                try await base.run()
            }
        } onGracefulShutdown: { [logger] in
            logger.debug("stopping service", metadata: metadata)
        }
    }
}

/// A service that is started only once it says so (the store, once its
/// database is reachable and its schema up to date): the next service of
/// the group waits for ``ready``.
protocol SignalsReady: Sendable {
    var ready: StartGate { get }
}

/// The machine store as a service, first in the group so that it closes
/// last.
///
/// - SQLite: opened before the group runs (the other services are built on
///   it) and closed when the group stops.
/// - PostgreSQL: its connection pool and its LISTEN connection run as this
///   service; it is ready once the schema is migrated and the config's
///   credentials are written, and stops when the group stops.
final class StoreService: Service, SignalsReady {
    private enum Backend {
        case sqlite(SQLiteMachineStore)
        case postgres(PostgresMachineStore, credentials: [StoredCredential])
    }

    private let backend: Backend
    let store: any MachineStore
    let logger: Logger
    let ready = StartGate()
    private let closed = NIOLockedValueBox(false)

    init(sqlite: SQLiteMachineStore, logger: Logger) {
        backend = .sqlite(sqlite)
        store = sqlite
        self.logger = logger
    }

    init(postgres: PostgresMachineStore, credentials: [StoredCredential], logger: Logger) {
        backend = .postgres(postgres, credentials: credentials)
        store = postgres
        self.logger = logger
    }

    /// Called after every committed change (and, with PostgreSQL, on every
    /// other controller's change too).
    func setChangeHandler(_ handler: @escaping @Sendable () -> Void) {
        switch backend {
        case .sqlite(let sqlite): sqlite.setChangeHandler(handler)
        case .postgres(let postgres, _): postgres.setChangeHandler(handler)
        }
    }

    func run() async throws {
        switch backend {
        case .sqlite:
            ready.open()
            try? await gracefulShutdown()
            close()
        case .postgres(let postgres, let credentials):
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await postgres.run() }
                try await postgres.migrate()
                try await ControllerRuntime.syncCredentials(credentials, into: postgres, logger: logger)
                ready.open()
            }
        }
    }

    /// Closes a SQLite store, once (the group stopped, or the start failed
    /// before the group ran). A PostgreSQL store closes with its service.
    func close() {
        guard case .sqlite(let sqlite) = backend else { return }
        let first = closed.withLockedValue { closed in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        do {
            try sqlite.close()
        } catch {
            logger.error("\(error)")
        }
    }
}

/// An ``RPCServer`` as a service: serves until the group shuts down, then
/// stops accepting, lets the calls in flight finish within the drain, and
/// closes its connections (cancelled: closes at once).
struct RPCServerService: Service {
    let server: RPCServer
    let drainTimeout: Duration

    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await server.run() }
            try? await gracefulShutdown()
            await server.shutdown(drainTimeout: drainTimeout)
        }
    }
}

/// The group, for a service that stops it (set once the group exists).
final class GroupHandle: Sendable {
    private let group = NIOLockedValueBox<ServiceGroup?>(nil)

    func set(_ group: ServiceGroup) {
        self.group.withLockedValue { $0 = group }
    }

    func triggerGracefulShutdown() async {
        await group.withLockedValue { $0 }?.triggerGracefulShutdown()
    }
}

/// Reads the signals the runtime trapped before anything started.
///
/// SIGHUP reloads the config, one reload at a time: the next signal is read
/// once the reload is done, and a stop waits for a reload in progress.
/// SIGTERM and SIGINT stop the group gracefully: the group traps them itself
/// once it runs (and its trap says so, at debug level), this covers one that
/// came before. It runs until the group shuts down, its turn coming after
/// the servers' (no reload begins once the poller may have stopped).
struct SignalService: Service {
    let signals: UnixSignalsSequence
    let reloader: ConfigReloader
    let group: GroupHandle
    /// Told when a reload begins and ends (`RELOADING=1`, `READY=1`).
    var notifications: ServiceNotifications?
    let logger: Logger

    func run() async {
        for await signal in signals.cancelOnGracefulShutdown() {
            if signal == .sighup {
                notifications?.reloading()
                await reloader.reload()
                await notifications?.reloaded()
            } else {
                logger.debug("stop signal", metadata: ["signal": "\(signal)"])
                await group.triggerGracefulShutdown()
            }
        }
    }
}

/// Last of the chain: once every service has started, says so and hands
/// the embedder the started controller (`onStarted`, cancelled when the
/// group shuts down). It ends only when the group stops it: a service of a
/// stopping group must not end before its turn.
struct AnnounceService: Service {
    let after: StartGate
    let started: ControllerRuntime.Started
    let metadata: Logger.Metadata
    let onStarted: @Sendable (ControllerRuntime.Started) async -> Void
    let logger: Logger

    func run() async {
        // The first service the group stops (but `until`'s): say so once.
        await withGracefulShutdownHandler {
            await after.wait()
            // Not when the group is already stopping (a signal during the start).
            guard !Task.isShuttingDownGracefully, !Task.isCancelled else { return }
            logger.info("controller started", metadata: metadata)
            let (started, onStarted) = (self.started, self.onStarted)
            await cancelWhenGracefulShutdown { await onStarted(started) }
            try? await gracefulShutdown()
        } onGracefulShutdown: { [logger] in
            logger.info("controller stopping")
        }
    }
}

/// The embedder's `until`: when it returns, the group shuts down gracefully.
struct UntilService: Service {
    let until: @Sendable () async -> Void

    func run() async {
        await cancelWhenGracefulShutdown(until)
    }
}
