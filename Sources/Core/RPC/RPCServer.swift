public import Logging
internal import NIOConcurrencyHelpers
public import NIOCore
public import NIOPosix

/// A ttrpc server on a Unix stream socket.
///
/// The socket is created 0600 inside a directory private to this user (a
/// stale socket file is removed first); every connection's peer is checked
/// with SO_PEERCRED against the ``PeerPolicy`` before any byte is read.
/// Each connection serves many calls at once; see ``RPCServiceRegistry``.
public final class RPCServer: Sendable {
    public struct Configuration: Sendable {
        /// Who may connect. Default: this process's uid or root.
        public var peerPolicy: PeerPolicy
        /// Run handlers on their connection's event loop (no thread hop per
        /// call; handlers must not block) rather than on the global executor.
        public var handlersOnEventLoop: Bool

        public init(peerPolicy: PeerPolicy = .sameUserOrRoot, handlersOnEventLoop: Bool = true) {
            self.peerPolicy = peerPolicy
            self.handlersOnEventLoop = handlersOnEventLoop
        }
    }

    public let socketPath: String
    private let listener: any Channel
    private let connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>
    private let calls: InFlightCalls

    private init(
        socketPath: String,
        listener: any Channel,
        connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>,
        calls: InFlightCalls
    ) {
        self.socketPath = socketPath
        self.listener = listener
        self.connections = connections
        self.calls = calls
    }

    /// Starts serving `registry` on `unixSocketPath`.
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

        let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
        let calls = InFlightCalls()
        let policy = configuration.peerPolicy
        let onLoop = configuration.handlersOnEventLoop
        let bootstrap = ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.recvAllocator, value: RPCServer.receiveAllocator)
            .childChannelInitializer { channel in
                PeerCredentials.of(channel).flatMapThrowing { peer in
                    guard policy.allows(peer) else {
                        logger.warning(
                            "refused connection: peer is not \(policy.summary)",
                            metadata: ["socket": "\(path)", "peer_uid": "\(peer.uid)", "peer_pid": "\(peer.pid)"]
                        )
                        throw RPCError(.permissionDenied, "peer \(peer) is not \(policy.summary)")
                    }
                    try addHandlers(to: channel, registry: registry, calls: calls, onLoop: onLoop, peer: peer, logger: logger)
                    let id = ObjectIdentifier(channel)
                    connections.withLockedValue { $0[id] = channel }
                    channel.closeFuture.whenComplete { _ in
                        _ = connections.withLockedValue { $0.removeValue(forKey: id) }
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
        logger.debug("listening", metadata: ["socket": "\(path)", "services": "\(registry.serviceNames)"])
        return RPCServer(socketPath: path, listener: listener, connections: connections, calls: calls)
    }

    /// Serves `registry` on one channel that is already connected and
    /// active, such as one end of a `socketpair(2)`; the peer is not checked.
    /// The channel's calls are cancelled when it closes.
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
            onLoop: configuration.handlersOnEventLoop, peer: nil, logger: logger
        )
    }

    private static func addHandlers(
        to channel: any Channel,
        registry: RPCServiceRegistry,
        calls: InFlightCalls,
        onLoop: Bool,
        peer: PeerCredentials?,
        logger: Logger
    ) throws {
        let handler = RPCServerHandler(
            registry: registry,
            calls: calls,
            executor: onLoop ? EventLoopTaskExecutor(channel.eventLoop) : nil,
            peer: peer,
            logger: logger
        )
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
        try channel.pipeline.syncOperations.addHandler(handler)
    }

    /// Reads grow up to a whole frame, so a 1 MiB payload arrives in a few
    /// reads instead of sixteen 64 KiB ones appended into the decoder.
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(
        minimum: 64, initial: 2048, maximum: FrameHeader.size + FrameHeader.maxDataLength
    )

    /// Open connections.
    public var connectionCount: Int { connections.withLockedValue { $0.count } }

    /// Calls being served, across connections.
    public var callsInFlight: Int { calls.count }

    /// Graceful shutdown: stops listening, refuses new calls with
    /// Unavailable, lets the calls in flight finish for up to `drainTimeout`,
    /// then closes (cancelling what is left) and removes the socket file.
    ///
    /// Once idle it gives clients up to `hangUpGrace` to close their
    /// connections first: closing right after an answer races containerd's
    /// Go ttrpc 1.1.1 client, which can then report "ttrpc: closed" for a
    /// call it was answered.
    public func shutdown(drainTimeout: Duration, hangUpGrace: Duration = .seconds(1)) async {
        calls.startDraining()
        try? await listener.close()
        await calls.waitUntilIdle(limit: drainTimeout)
        let open = connections.withLockedValue { Array($0.values) }
        _ = await firstWithin(hangUpGrace) {
            for channel in open { try? await channel.closeFuture.get() }
        }
        await close()
    }

    /// Stops listening, closes every connection (cancelling the calls in
    /// flight) and removes the socket file.
    public func close() async {
        try? await listener.close()
        let open = connections.withLockedValue { Array($0.values) }
        for channel in open {
            try? await channel.close()
        }
        UnixSocket.remove(socketPath)
    }

    /// Completes when the listening socket closes.
    public var closeFuture: EventLoopFuture<Void> { listener.closeFuture }
}
