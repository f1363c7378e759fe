public import Core
public import NIOCore
import NIOPosix

/// A bare connection to an RPC server: tests write any bytes they like
/// (malformed, oversize, odd frame types) and read back decoded frames.
public final class RawConnection: Sendable {
    private let channel: any Channel
    private let frames: AsyncThrowingStream<FrameDecoderOutput, any Error>

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = FrameDecoderOutput
        let continuation: AsyncThrowingStream<FrameDecoderOutput, any Error>.Continuation
        init(_ continuation: AsyncThrowingStream<FrameDecoderOutput, any Error>.Continuation) {
            self.continuation = continuation
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            continuation.yield(unwrapInboundIn(data))
        }
        func channelInactive(context: ChannelHandlerContext) {
            continuation.finish()
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            continuation.finish(throwing: error)
        }
    }

    /// - Parameter reading: false: nothing is read from the socket until
    ///   ``startReading()`` (a client that leaves its answers unread).
    public init(unixSocketPath: String, reading: Bool = true) async throws {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: FrameDecoderOutput.self)
        frames = stream
        channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: reading)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(Collector(continuation))
                }
            }
            .connect(unixDomainSocketPath: unixSocketPath)
            .get()
    }

    /// Reads from the socket from now on (see `init`'s `reading`).
    public func startReading() async throws {
        try await channel.setOption(.autoRead, value: true)
        channel.read()
    }

    /// Writes without waiting for the bytes to leave (they may not, if the
    /// peer stops reading).
    public func writeWithoutWaiting(_ bytes: ByteBuffer) {
        channel.writeAndFlush(bytes, promise: nil)
    }

    public func write(_ bytes: ByteBuffer) async throws {
        try await channel.writeAndFlush(bytes)
    }

    public func write(_ bytes: [UInt8]) async throws {
        try await write(ByteBuffer(bytes: bytes))
    }

    /// Sends a request frame built from `envelope` on `streamID`.
    public func sendRequest(_ envelope: RequestEnvelope, streamID: UInt32) async throws {
        let frame = try FrameEncoding.request(envelope, streamID: streamID, allocator: channel.allocator)
        try await write(frame.contiguous)
    }

    /// The next frame from the server, or ``TimedOut``; nil when it closed.
    public func next(_ limit: Duration = .seconds(10)) async throws -> FrameDecoderOutput? {
        let frames = self.frames
        return try await withTimeout(limit, "a frame from the server") {
            var iterator = frames.makeAsyncIterator()
            return try await iterator.next()
        }
    }

    /// The next frame, decoded as a response.
    public func nextResponse(_ limit: Duration = .seconds(10)) async throws -> (streamID: UInt32, ResponseEnvelope) {
        guard case .frame(let frame)? = try await next(limit) else {
            throw TimedOut(what: "a response frame (the connection closed or sent something else)", limit: limit)
        }
        return (frame.streamID, try ResponseEnvelope(decoding: frame.data))
    }

    public var isActive: Bool { channel.isActive }
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    public func close() async {
        try? await channel.close()
    }
}
