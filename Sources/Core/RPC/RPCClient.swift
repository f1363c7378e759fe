public import Logging
internal import NIOConcurrencyHelpers
public import NIOCore
public import NIOPosix
internal import SwiftProtobuf
#if canImport(Glibc)
internal import Glibc
#endif

/// A ttrpc client on one Unix socket connection.
///
/// Many calls may be in flight at once, multiplexed by odd stream ids, and
/// answered in any order. A deadline is sent as `timeout_nano` and also
/// enforced here, so a server that never answers cannot hang a caller. When
/// the connection is lost every call in flight fails at once with
/// Unavailable.
///
/// Callers that want the lowest latency run on ``executor`` (the
/// connection's event loop), e.g. with `withTaskExecutorPreference`.
public final class RPCClient: Sendable {
    public let socketPath: String
    /// The server process, from SO_PEERCRED.
    public let peer: PeerCredentials
    /// Runs tasks on this connection's event loop.
    public let executor: EventLoopTaskExecutor
    private let channel: any Channel
    private let handler: NIOLoopBound<RPCClientHandler>
    private let nextStreamID: NIOLockedValueBox<UInt32>
    private let inFlight = InFlightCalls()

    private init(socketPath: String, peer: PeerCredentials, channel: any Channel, handler: NIOLoopBound<RPCClientHandler>) {
        self.socketPath = socketPath
        self.peer = peer
        self.channel = channel
        self.handler = handler
        self.executor = EventLoopTaskExecutor(channel.eventLoop)
        self.nextStreamID = NIOLockedValueBox(1)
    }

    /// Connects to the server at `unixSocketPath` and checks its peer.
    ///
    /// - Throws: `RPCError` Unavailable when nothing accepts the connection;
    ///   PermissionDenied when the server process fails `peerPolicy`.
    /// Why a connect failed, as a person reads it: "connection refused",
    /// not NIO's "connect(descriptor:addr:size:): Connection refused (errno: 111)".
    static func reason(_ error: any Error) -> String {
        guard let error = error as? IOError else { return "\(error)" }
        return String(cString: strerror(error.errnoCode)).lowercased()
    }

    public static func connect(
        unixSocketPath path: String,
        peerPolicy: PeerPolicy = .sameUserOrRoot,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger
    ) async throws -> RPCClient {
        try UnixSocket.checkPathLength(path)
        let bootstrap = ClientBootstrap(group: eventLoopGroup)
            .channelOption(.recvAllocator, value: RPCServer.receiveAllocator)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(RPCClientHandler(socketPath: path, logger: logger))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
        } catch {
            throw RPCError(.unavailable, "cannot connect to \(path): \(Self.reason(error))")
        }
        do {
            let peer: PeerCredentials
            do {
                peer = try await PeerCredentials.of(channel).get()
            } catch {
                // The server closed at once: typically it refused us.
                throw RPCError(.unavailable, "connection to \(path) closed before it was set up: \(error)")
            }
            guard peerPolicy.allows(peer) else {
                logger.warning(
                    "refused server: peer is not \(peerPolicy.summary)",
                    metadata: ["socket": "\(path)", "peer_uid": "\(peer.uid)", "peer_pid": "\(peer.pid)"]
                )
                throw RPCError(.permissionDenied, "server at \(path) is \(peer), not \(peerPolicy.summary)")
            }
            let handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: RPCClientHandler.self), eventLoop: channel.eventLoop)
            }.get()
            return RPCClient(socketPath: path, peer: peer, channel: channel, handler: handler)
        } catch let error as RPCError {
            try? await channel.close()
            throw error
        } catch {
            // The server closed while we set up (its handlers are gone).
            try? await channel.close()
            throw RPCError(.unavailable, "connection to \(path) closed while connecting: \(error)")
        }
    }

    /// Calls sent and not yet answered (what a drain waits for).
    public var callsInFlight: Int { inFlight.count }

    /// Returns once no call is in flight, or after `limit`.
    public func waitUntilIdle(limit: Duration) async {
        await inFlight.waitUntilIdle(limit: limit)
    }

    /// Whether the connection is still open.
    public var isActive: Bool { channel.isActive }

    /// Completes when the connection closes.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Closes the connection; calls in flight fail with Unavailable.
    public func close() async {
        try? await channel.close()
    }

    /// Calls `service`/`method` with a serialized request.
    ///
    /// - Parameters:
    ///   - timeout: how long to wait; sent to the server as `timeout_nano`.
    ///     nil waits for as long as the connection lives.
    /// - Throws: `RPCError`: the server's status; DeadlineExceeded when the
    ///   timeout passes; Unavailable when the connection is lost;
    ///   ResourceExhausted when the request exceeds 4 MiB; Cancelled when
    ///   the calling task is cancelled.
    public func unary(
        service: String,
        method: String,
        payload: ByteBuffer,
        metadata: Metadata = [],
        timeout: Duration? = nil
    ) async throws -> RPCResponse {
        let methodName = "\(service)/\(method)"
        var timeoutNanos: Int64 = 0
        if let timeout {
            timeoutNanos = timeout.totalNanoseconds
            guard timeoutNanos > 0 else {
                throw RPCError(.deadlineExceeded, "\(methodName): the deadline had passed before the call was sent")
            }
        }
        guard !Task.isCancelled else { throw RPCError(.cancelled, "the call was cancelled") }
        let streamID = try allocateStreamID()
        let frame = try FrameEncoding.request(
            RequestEnvelope(service: service, method: method, payload: payload, timeoutNanos: timeoutNanos, metadata: metadata),
            streamID: streamID,
            allocator: channel.allocator
        )
        let eventLoop = channel.eventLoop
        let promise = eventLoop.makePromise(of: ResponseEnvelope.self)
        let call = RPCClientHandler.Call(
            streamID: streamID,
            frame: frame,
            promise: promise,
            timeout: timeout.map { _ in .nanoseconds(timeoutNanos) },
            methodName: methodName
        )
        let handler = self.handler
        if eventLoop.inEventLoop {
            handler.value.send(call)
        } else {
            eventLoop.execute { handler.value.send(call) }
        }
        _ = inFlight.begin()  // a client never refuses its own calls
        defer { inFlight.end() }
        let response = try await withTaskCancellationHandler {
            try await promise.futureResult.get()
        } onCancel: {
            eventLoop.execute { handler.value.cancel(streamID) }
        }
        if let error = response.error { throw error }
        return RPCResponse(payload: response.payload, metadata: response.metadata)
    }

    /// Calls a typed method.
    ///
    /// - Throws: `RPCError` as ``unary(service:method:payload:metadata:timeout:)``,
    ///   and Internal when the response cannot be decoded.
    public func call<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ request: Request,
        metadata: Metadata = [],
        timeout: Duration? = nil
    ) async throws -> Response {
        let payload: ByteBuffer
        do {
            payload = try request.serializedBuffer()
        } catch {
            throw RPCError(.invalidArgument, "cannot encode \(Request.protoMessageName): \(error)")
        }
        let response = try await unary(
            service: method.service, method: method.method, payload: payload, metadata: metadata, timeout: timeout
        )
        do {
            return try Response(buffer: response.payload)
        } catch {
            throw RPCError(.internal, "cannot decode \(Response.protoMessageName) from \(method.fullName): \(error)")
        }
    }

    private func allocateStreamID() throws(RPCError) -> UInt32 {
        let id = nextStreamID.withLockedValue { next -> UInt32? in
            guard next < UInt32.max - 1 else { return nil }
            defer { next += 2 }
            return next
        }
        guard let id else {
            throw RPCError(.unavailable, "stream ids on \(socketPath) are exhausted; open a new connection")
        }
        return id
    }
}

extension Duration {
    /// Whole nanoseconds, saturating at Int64's range.
    public var totalNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = product.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return sum
    }
}
