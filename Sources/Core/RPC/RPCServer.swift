public import Logging
public import NIOCore
public import NIOPosix

/// A ttrpc server on a Unix stream socket.
///
/// The socket is created 0600 inside a directory private to this user (a
/// stale socket file is removed first); every connection's peer is checked
/// with SO_PEERCRED against the ``PeerPolicy`` before any byte is read.
/// Each connection serves many calls at once; see ``RPCServiceRegistry``.
/// The peer is checked again before each request (the process must still
/// exist and its current uids be allowed).
///
/// ``bind(unixSocketPath:registry:configuration:eventLoopGroup:logger:)``
/// listens; ``run()`` serves: its accept loop is one task group, each
/// connection's life a child task of it, and it returns once the listener
/// and every connection are closed (``shutdown(drainTimeout:hangUpGrace:)``,
/// ``close()``, or cancellation). Until `run()` starts, connections wait in
/// the listen backlog. ``serving(_:)`` runs it around a scope.
///
/// What clients may hold is bounded by ``ServerLimits``: connections, idle
/// time, the time to finish a frame, calls in flight per connection and the
/// memory of buffered requests; ``limitStats`` reports them.
public final class RPCServer: Sendable {
    public struct Configuration: Sendable {
        /// Who may connect. Default: this process's uid or root.
        public var peerPolicy: PeerPolicy
        /// Run handlers on their connection's event loop (no thread hop per
        /// call; handlers must not block) rather than on the global executor.
        public var handlersOnEventLoop: Bool
        /// Bounds on connections, time and memory.
        public var limits: ServerLimits
        /// Told each time a limit is hit (e.g. to count it in a metric).
        public var onLimitHit: (@Sendable (ServerLimit) -> Void)?

        public init(
            peerPolicy: PeerPolicy = .sameUserOrRoot,
            handlersOnEventLoop: Bool = true,
            limits: ServerLimits = ServerLimits(),
            onLimitHit: (@Sendable (ServerLimit) -> Void)? = nil
        ) {
            self.peerPolicy = peerPolicy
            self.handlersOnEventLoop = handlersOnEventLoop
            self.limits = limits
            self.onLimitHit = onLimitHit
        }
    }

    public let socketPath: String
    private let listener: any Channel
    private let loop: AcceptLoop
    private let calls: InFlightCalls
    private let counters: ServerLimitCounters

    private init(socketPath: String, listener: any Channel, loop: AcceptLoop, calls: InFlightCalls, counters: ServerLimitCounters) {
        self.socketPath = socketPath
        self.listener = listener
        self.loop = loop
        self.calls = calls
        self.counters = counters
    }

    /// Listens on `unixSocketPath` for `registry`'s calls; ``run()`` serves them.
    ///
    /// - Throws: ``UnixSocket/PathError`` when the path is too long, its
    ///   directory is not private, or a non-socket file is in the way;
    ///   `RPCError` Unavailable when the socket cannot be bound.
    public static func bind(
        unixSocketPath path: String,
        registry: RPCServiceRegistry,
        configuration: Configuration = Configuration(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger
    ) async throws -> RPCServer {
        try UnixSocket.checkPathLength(path)
        try UnixSocket.checkSocketDirectory(forSocket: path)
        try UnixSocket.removeStale(path)

        let calls = InFlightCalls()
        let loop = AcceptLoop(calls: calls) { UnixSocket.remove(path) }
        let policy = configuration.peerPolicy
        let limits = configuration.limits
        let counters = ServerLimitCounters(server: path, onHit: configuration.onLimitHit)
        let bootstrap = ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            // Nothing is accepted before run() starts its accept loop.
            .serverChannelOption(.autoRead, value: false)
            .childChannelOption(.recvAllocator, value: RPCServer.receiveAllocator)
            .childChannelInitializer { channel in
                PeerCredentials.of(channel).flatMapThrowing { peer in
                    let metadata: Logger.Metadata = ["socket": "\(path)", "peer_uid": "\(peer.uid)", "peer_pid": "\(peer.pid)"]
                    guard policy.allows(peer) else {
                        logger.warning("refused connection: peer is not \(policy.summary)", metadata: metadata)
                        throw RPCError(.permissionDenied, "peer \(peer) is not \(policy.summary)")
                    }
                    // Accepted and closed at once: the descriptor goes back
                    // now, and the listener keeps accepting, so a client gets
                    // in as soon as others leave.
                    guard counters.openConnection(cap: limits.maxConnections) else {
                        counters.hit(
                            .connections, "refused connection: \(limits.maxConnections) connections are open, the most this socket serves",
                            metadata: metadata, logger: logger
                        )
                        throw RPCError(.resourceExhausted, "too many connections")
                    }
                    channel.closeFuture.whenComplete { _ in
                        let open = counters.closeConnection()
                        logger.trace("connection closed", metadata: metadata.merging(["open": "\(open)"]) { $1 })
                    }
                    let connectionGuard = ConnectionGuard(limits: limits, counters: counters, metadata: metadata, logger: logger)
                    try addHandlers(
                        to: channel, registry: registry, calls: calls, configuration: configuration, peer: peer,
                        connectionGuard: connectionGuard, logger: logger
                    )
                    // Its life is a child task of run()'s accept loop; once
                    // the server stops, nothing would own it.
                    guard loop.adopt(channel) else {
                        throw RPCError(.unavailable, "the server is shutting down")
                    }
                }
            }
        let listener: any Channel
        do {
            listener = try await bootstrap.bind(unixDomainSocketPath: path).get()
        } catch {
            throw RPCError(.unavailable, "cannot listen on \(path): \(error)")
        }
        do {
            try UnixSocket.restrictMode(path)
        } catch {
            try? await listener.close()
            throw error
        }
        loop.listening(on: listener)
        logger.debug("listening", metadata: ["socket": "\(path)", "services": "\(registry.serviceNames)"])
        return RPCServer(socketPath: path, listener: listener, loop: loop, calls: calls, counters: counters)
    }

    /// Serves until ``shutdown(drainTimeout:hangUpGrace:)`` or ``close()``
    /// (cancelled: as `close()`), then returns once the listener and every
    /// connection are closed and the socket file is removed. Runs once: a
    /// second call, or one after the server was closed, returns at once.
    public func run() async {
        await loop.run()
    }

    /// Serves `registry` on one channel that is already connected and
    /// active, such as one end of a `socketpair(2)`; the peer is not checked
    /// and the configuration's limits do not apply. The channel's calls are
    /// cancelled when it closes.
    ///
    /// Must be called on the channel's event loop (in a channel initializer).
    public static func serve(
        connection channel: any Channel,
        registry: RPCServiceRegistry,
        configuration: Configuration = Configuration(),
        logger: Logger
    ) throws {
        try addHandlers(
            to: channel, registry: registry, calls: InFlightCalls(),
            configuration: configuration, peer: nil, connectionGuard: nil, logger: logger
        )
    }

    private static func addHandlers(
        to channel: any Channel,
        registry: RPCServiceRegistry,
        calls: InFlightCalls,
        configuration: Configuration,
        peer: PeerCredentials?,
        connectionGuard: ConnectionGuard?,
        logger: Logger
    ) throws {
        let handler = RPCServerHandler(
            registry: registry,
            calls: calls,
            executor: configuration.handlersOnEventLoop ? EventLoopTaskExecutor(channel.eventLoop) : nil,
            peer: peer,
            peerPolicy: configuration.peerPolicy,
            connectionGuard: connectionGuard,
            logger: logger
        )
        let pipeline = channel.pipeline.syncOperations
        if connectionGuard != nil, let idle = configuration.limits.idleTimeout {
            try pipeline.addHandler(IdleStateHandler(allTimeout: .nanoseconds(idle.totalNanoseconds)))
        }
        try pipeline.addHandler(ByteToMessageHandler(FrameDecoder(observer: connectionGuard)))
        try pipeline.addHandler(handler)
    }

    /// Reads grow up to a whole frame, so a 1 MiB payload arrives in a few
    /// reads instead of sixteen 64 KiB ones appended into the decoder.
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(
        minimum: 64, initial: 2048, maximum: FrameHeader.size + FrameHeader.maxDataLength
    )

    /// Open connections.
    public var connectionCount: Int { counters.stats.connections }

    /// Calls being served, across connections.
    public var callsInFlight: Int { calls.count }

    /// Open connections, buffered request bytes and the limits hit so far.
    public var limitStats: ServerLimitStats { counters.stats }

    /// Graceful shutdown: stops listening, refuses new calls with
    /// Unavailable, lets the calls in flight finish for up to `drainTimeout`,
    /// then closes (cancelling what is left) and removes the socket file.
    /// Returns once ``run()`` has.
    ///
    /// Once idle it gives clients up to `hangUpGrace` to close their
    /// connections first: closing right after an answer races containerd's
    /// Go ttrpc 1.1.1 client, which can then report "ttrpc: closed" for a
    /// call it was answered. Cancelled, it closes at once (``close()``).
    public func shutdown(drainTimeout: Duration, hangUpGrace: Duration = .seconds(1)) async {
        await loop.stop(.graceful(drain: drainTimeout, hangUpGrace: hangUpGrace))
    }

    /// Stops listening, closes every connection (cancelling the calls in
    /// flight) and removes the socket file; returns once ``run()`` has.
    /// During a graceful shutdown it cuts the drain short.
    public func close() async {
        await loop.stop(.immediate)
    }

    /// Runs ``run()`` while `body` runs, then closes the server (cancelling
    /// calls still in flight): for a server whose life is one scope.
    public func serving<T>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self, returning: T.self) { group in
            group.addTask { await self.run() }
            let result: Result<T, any Error>
            do {
                result = .success(try await body())
            } catch {
                result = .failure(error)
            }
            await close()
            return try result.get()
        }
    }

    /// Completes when the listening socket closes.
    public var closeFuture: EventLoopFuture<Void> { listener.closeFuture }
}
