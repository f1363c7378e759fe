internal import Logging
internal import NIOCore

/// Serves the calls of one connection.
///
/// Runs on the connection's event loop. Each request becomes a task; its
/// answer is written exactly once: by the handler, or by the deadline timer,
/// whichever comes first. Closing the connection cancels every task.
///
/// Backpressure: with ``ServerLimits/requestsPerConnection`` calls in
/// flight, or while the peer leaves its answers unread (the channel is not
/// writable), the handler holds back `read()`, so nothing more is read from
/// the socket; frames already decoded wait in a queue (charged to the
/// server's request memory) and are served as calls finish.
final class RPCServerHandler: ChannelDuplexHandler {
    typealias InboundIn = FrameDecoderOutput
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct InFlight {
        var task: Task<Void, Never>?
        var timeout: Scheduled<Void>?
    }

    private let registry: RPCServiceRegistry
    private let calls: InFlightCalls
    private let executor: EventLoopTaskExecutor?
    private let peer: PeerCredentials?
    /// The peer process, checked again before the requests of each read.
    private var peerProcess: PeerProcess?
    /// The check's verdict for the rest of this read (see ``peerRefusal()``).
    private var peerVerdict: String??
    private let peerPolicy: PeerPolicy
    private let connectionGuard: ConnectionGuard?
    private let logger: Logger
    private var inFlight: [UInt32: InFlight] = [:]
    private var context: ChannelHandlerContext?
    private var active = true
    /// Frames read while at the in-flight cap, oldest first.
    private var waiting: [Frame] = []
    private var waitingStart = 0
    /// A `read()` held back by backpressure.
    private var heldRead = false
    private var paused = false
    /// In ``resumeIfPossible()``: a call answered at once while serving the
    /// queue must not start a nested round.
    private var draining = false
    /// Between a read's first `channelRead` and its `channelReadComplete`:
    /// answers are written then and flushed together at the read's end.
    private var reading = false
    /// Answers written and not flushed yet.
    private var unflushed = false
    /// Answers encoded one after another, not yet handed to the channel:
    /// a read's answers go to the socket as one buffer.
    private var output = ByteBuffer()
    /// The last buffer handed to the channel, taken back for the next
    /// answers once the channel is done with it (see ``flushIfNeeded()``).
    private var sent: ByteBuffer?
    /// Answers are handed over in pieces of about this size.
    private static let outputChunk = 64 * 1024

    init(
        registry: RPCServiceRegistry,
        calls: InFlightCalls,
        executor: EventLoopTaskExecutor?,
        peer: PeerCredentials?,
        peerPolicy: PeerPolicy,
        connectionGuard: ConnectionGuard?,
        logger: Logger
    ) {
        self.registry = registry
        self.calls = calls
        self.executor = executor
        self.peer = peer
        self.peerPolicy = peerPolicy
        self.connectionGuard = connectionGuard
        self.logger = logger
    }

    private var requestCap: Int { connectionGuard?.limits.requestsPerConnection ?? .max }
    private var waitingCount: Int { waiting.count - waitingStart }

    /// Calls being served on this connection.
    var inFlightCount: Int { inFlight.count }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        connectionGuard?.attach(context)
        if let peer { peerProcess = PeerProcess(credentials: peer, channel: context.channel) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelAll()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelAll()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !(error is ConnectionGuard.OverBudget) {
            logger.debug("closing connection after a read error", metadata: ["error": "\(error)"])
        }
        cancelAll()
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let idle = event as? IdleStateHandler.IdleStateEvent, idle == .all, let connectionGuard else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // Idle only when nothing is being served or waits to be: a long
        // poll in flight keeps its connection.
        guard inFlight.isEmpty, waitingCount == 0 else { return }
        connectionGuard.counters.hit(
            .idleTimeout, "closing idle connection: no call and no bytes for \(connectionGuard.limits.idleTimeout ?? .zero)",
            metadata: connectionGuard.metadata, logger: logger
        )
        cancelAll()
        context.close(promise: nil)
    }

    // MARK: Backpressure

    func read(context: ChannelHandlerContext) {
        if mustPause {
            heldRead = true
            pauseReading()
            return
        }
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeIfPossible()
        context.fireChannelWritabilityChanged()
    }

    private var mustPause: Bool {
        guard let context, connectionGuard != nil else { return false }
        return inFlight.count >= requestCap || waitingCount > 0 || !context.channel.isWritable
    }

    private func pauseReading() {
        guard !paused, let connectionGuard else { return }
        paused = true
        connectionGuard.readingPaused(true)
        let why = (context?.channel.isWritable ?? true)
            ? "\(inFlight.count) calls in flight, the most one connection may have" : "the peer is not reading its answers"
        connectionGuard.counters.hit(
            .backpressure, "stopped reading from a connection: \(why)",
            metadata: connectionGuard.metadata, logger: logger
        )
    }

    /// Serves waiting frames while slots are free, then reads again if
    /// nothing holds the connection back.
    private func resumeIfPossible() {
        guard let context, active, !draining else { return }
        draining = true
        while active, waitingCount > 0, inFlight.count < requestCap {
            let frame = waiting[waitingStart]
            waitingStart += 1
            if waitingStart == waiting.count {
                waiting.removeAll(keepingCapacity: false)
                waitingStart = 0
            }
            connectionGuard?.dequeued(FrameHeader.size + frame.data.readableBytes)
            receive(frame, context: context)
        }
        draining = false
        guard active, !mustPause else { return }
        if paused {
            paused = false
            connectionGuard?.readingPaused(false)
        }
        if heldRead {
            heldRead = false
            context.read()
        }
    }

    // MARK: Calls

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        switch unwrapInboundIn(data) {
        case .oversized(let streamID, let type, let length):
            guard type == .request else { return }
            answer(
                streamID,
                .failure(RPCError(
                    .resourceExhausted,
                    "request of \(length) bytes exceeds the ttrpc frame limit of \(FrameHeader.maxDataLength) bytes"
                ))
            )
        case .frame(let frame):
            // Other frame types (streaming data, future kinds) are ignored,
            // as ttrpc requires for forward compatibility.
            guard frame.type == .request else { return }
            if connectionGuard != nil, inFlight.count >= requestCap || waitingCount > 0 {
                do {
                    try connectionGuard?.queued(FrameHeader.size + frame.data.readableBytes)
                } catch {
                    cancelAll()
                    context.close(promise: nil)
                    return
                }
                waiting.append(frame)
                pauseReading()
                return
            }
            receive(frame, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        peerVerdict = nil
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    private func receive(_ frame: Frame, context: ChannelHandlerContext) {
        let streamID = frame.streamID
        if let peer, let why = peerRefusal() {
            let metadata: Logger.Metadata = connectionGuard?.metadata ?? ["peer_pid": "\(peer.pid)", "peer_uid": "\(peer.uid)"]
            if let connectionGuard {
                connectionGuard.counters.hit(.peer, "refused a call: \(why)", metadata: metadata, logger: logger)
            } else {
                logger.warning("refused a call: \(why)", metadata: metadata)
            }
            answer(streamID, .failure(RPCError(.permissionDenied, "\(why)")))
            return
        }
        let request: RequestEnvelope
        do {
            request = try RequestEnvelope(decoding: frame.data)
        } catch {
            answer(streamID, .failure(RPCError(.invalidArgument, "malformed request: \(error)")))
            return
        }
        guard streamID % 2 == 1 else {
            answer(streamID, .failure(RPCError(.invalidArgument, "stream id \(streamID) is even; client stream ids must be odd")))
            return
        }
        guard inFlight[streamID] == nil else {
            answer(streamID, .failure(RPCError(.invalidArgument, "stream id \(streamID) is already in use")))
            return
        }
        let method: RPCMethodHandler
        switch registry.handler(service: request.service, method: request.method) {
        case .success(let handler): method = handler
        case .failure(let error):
            answer(streamID, .failure(error))
            return
        }
        if request.timeoutNanos < 0 {
            answer(streamID, .failure(RPCError(.deadlineExceeded, "the call's deadline had passed when it arrived")))
            return
        }

        guard calls.begin() else {
            answer(streamID, .failure(RPCError(.unavailable, "the server is shutting down")))
            return
        }
        let deadline = request.timeoutNanos > 0 ? ContinuousClock.now + .nanoseconds(request.timeoutNanos) : nil
        let callContext = RPCServerContext(
            service: request.service,
            method: request.method,
            metadata: request.metadata,
            deadline: deadline,
            peer: peer
        )
        let payload = request.payload
        let eventLoop = context.eventLoop
        let this = NIOLoopBound(self, eventLoop: eventLoop)
        inFlight[streamID] = InFlight()
        let operation: @Sendable () async -> Void = {
            let result: Result<RPCResponse, RPCError>
            do {
                result = .success(try await method(payload, callContext))
            } catch {
                result = .failure(RPCError(from: error))
            }
            if eventLoop.inEventLoop {
                this.value.finish(streamID, result)
            } else {
                eventLoop.execute { this.value.finish(streamID, result) }
            }
        }
        let task: Task<Void, Never>
        if let executor, #available(macOS 26, *) {
            // Runs the handler right here on the loop until it first
            // suspends: a handler that does not suspend is answered without
            // a task hop, in this same read.
            task = Task.immediate(executorPreference: executor, operation: operation)
        } else {
            task = Task(executorPreference: executor, operation: operation)
        }
        // Already answered if the handler finished synchronously.
        guard inFlight[streamID] != nil else { return }
        inFlight[streamID]?.task = task
        if request.timeoutNanos > 0 {
            let timeout = Duration.nanoseconds(request.timeoutNanos)
            inFlight[streamID]?.timeout = eventLoop.scheduleTask(in: .nanoseconds(request.timeoutNanos)) {
                let this = this.value
                this.inFlight[streamID]?.task?.cancel()
                this.finish(streamID, .failure(RPCError(.deadlineExceeded, "deadline of \(timeout) exceeded")))
            }
        }
    }

    /// Why the peer may no longer call, or nil. Checked before the first
    /// request of each read (from `channelRead` to `channelReadComplete`),
    /// and so before every request: the requests a read brings share the
    /// answer, as they arrived together. A request served from the queue
    /// (``resumeIfPossible()``) outside a read is checked by itself.
    private func peerRefusal() -> String? {
        guard let peerProcess else { return nil }
        if reading, let verdict = peerVerdict { return verdict }
        let verdict = peerProcess.recheck(against: peerPolicy)
        if reading { peerVerdict = .some(verdict) }
        return verdict
    }

    /// Answers a call that has a task, once: by the handler or by the
    /// deadline, whichever comes first; the other is dropped.
    private func finish(_ streamID: UInt32, _ result: Result<RPCResponse, RPCError>) {
        guard let entry = inFlight.removeValue(forKey: streamID) else { return }
        entry.timeout?.cancel()
        answer(streamID, result)
        calls.end()
        resumeIfPossible()
    }

    private func answer(_ streamID: UInt32, _ result: Result<RPCResponse, RPCError>) {
        guard let context, active else { return }
        let envelope: ResponseEnvelope
        switch result {
        case .success(let response): envelope = ResponseEnvelope(payload: response.payload, metadata: response.metadata)
        case .failure(let error): envelope = ResponseEnvelope(error: error)
        }
        let allocator = context.channel.allocator
        let payload: ByteBuffer?
        do {
            payload = try FrameEncoding.response(envelope, streamID: streamID, appendingTo: &output, allocator: allocator)
        } catch {
            // The handler's response does not fit in a frame: say so instead.
            logger.warning("response too large for a frame", metadata: ["stream": "\(streamID)", "error": "\(error)"])
            payload = try! FrameEncoding.response(ResponseEnvelope(error: error), streamID: streamID, appendingTo: &output, allocator: allocator)
        }
        if let payload {
            // A large payload goes as a buffer of its own, right after the
            // rest of its frame.
            writeOutput()
            context.write(wrapOutboundOut(payload), promise: nil)
        } else if output.readableBytes >= Self.outputChunk {
            writeOutput()
        }
        // The answers to the requests of one read go out in one write at
        // the read's end: the peer then reads them all in one go too. An
        // answer given at any other time (a handler that suspended, a
        // deadline) goes out at once, so nobody waits for a later request.
        if !reading { flushIfNeeded() }
    }

    /// Hands the answers encoded so far to the channel.
    private func writeOutput() {
        guard output.readableBytes > 0, let context else { return }
        context.write(wrapOutboundOut(output), promise: nil)
        unflushed = true
        sent = output
        output = ByteBuffer()
    }

    private func flushIfNeeded() {
        writeOutput()
        guard unflushed, let context else { return }
        unflushed = false
        context.flush()
        // Written by now unless the socket is full: then the channel still
        // holds the buffer and clearing it allocates a fresh one instead.
        if var buffer = sent, output.capacity == 0 {
            sent = nil
            if buffer.capacity <= Self.outputChunk * 2 {
                buffer.clear()
                output = buffer
            }
        }
    }


    private func cancelAll() {
        active = false
        waiting.removeAll()
        waitingStart = 0
        output = ByteBuffer()
        sent = nil
        connectionGuard?.release()
        let calls = inFlight
        inFlight.removeAll()
        for call in calls.values {
            call.timeout?.cancel()
            call.task?.cancel()
            self.calls.end()
        }
    }
}
