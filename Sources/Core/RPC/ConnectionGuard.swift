internal import Logging
internal import NIOCore

/// The request bytes one server connection holds, charged to the server's
/// shared budget, and the clock of its unfinished frame.
///
/// Runs on the connection's event loop: the frame decoder reports each
/// step, the ``RPCServerHandler`` reports frames it queues and takes back.
final class ConnectionGuard: FrameDecoderObserver {
    /// Thrown (through the decoder) when buffering more would exceed the
    /// budget; the connection then closes.
    struct OverBudget: Error, CustomStringConvertible {
        var wanted: Int
        var description: String { "\(wanted) bytes of requests buffered would exceed the server's request memory budget" }
    }

    let limits: ServerLimits
    let counters: ServerLimitCounters
    let logger: Logger
    /// The peer, for log lines.
    let metadata: Logger.Metadata
    private var unfinishedBytes = 0
    private var queuedBytes = 0
    private var charged = 0
    private var unfinished = false
    private var paused = false
    private var frameTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private var closed = false

    init(limits: ServerLimits, counters: ServerLimitCounters, metadata: Logger.Metadata, logger: Logger) {
        self.limits = limits
        self.counters = counters
        self.metadata = metadata
        self.logger = logger
    }

    func attach(_ context: ChannelHandlerContext) {
        self.context = context
    }

    /// Gives back everything the connection held (it closed).
    func release() {
        closed = true
        frameTimer?.cancel()
        frameTimer = nil
        _ = counters.rebuffer(from: charged, to: 0, budget: limits.bufferedRequestMemory)
        charged = 0
        unfinishedBytes = 0
        queuedBytes = 0
        context = nil
    }

    func frameDecoderStep(buffered: Int, unfinished: Bool, completedFrame: Bool) throws {
        guard !closed else { return }
        unfinishedBytes = buffered
        try recharge()
        if completedFrame {
            frameTimer?.cancel()
            frameTimer = nil
        }
        self.unfinished = unfinished
        if unfinished { startFrameClock() } else { stopFrameClock() }
    }

    /// A frame waits for a call slot: its bytes stay charged until taken.
    func queued(_ bytes: Int) throws {
        guard !closed else { return }
        queuedBytes += bytes
        try recharge()
    }

    func dequeued(_ bytes: Int) {
        guard !closed else { return }
        queuedBytes -= bytes
        try? recharge()
    }

    /// Reading stopped (backpressure): the peer cannot finish its frame
    /// now, so its clock stops; it starts again from zero on resume.
    func readingPaused(_ paused: Bool) {
        self.paused = paused
        if paused { stopFrameClock() } else if unfinished { startFrameClock() }
    }

    private func recharge() throws {
        let wanted = unfinishedBytes + queuedBytes
        guard counters.rebuffer(from: charged, to: wanted, budget: limits.bufferedRequestMemory) else {
            counters.hit(
                .requestMemory,
                "closing connection: its buffered requests would exceed the request memory budget of \(limits.bufferedRequestMemory) bytes",
                metadata: metadata.merging(["buffered_bytes": "\(wanted)"]) { $1 }, logger: logger
            )
            throw OverBudget(wanted: wanted)
        }
        charged = wanted
    }

    private func startFrameClock() {
        guard frameTimer == nil, !paused, let context else { return }
        let timeout = limits.frameTimeout
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        frameTimer = context.eventLoop.scheduleTask(in: .nanoseconds(timeout.totalNanoseconds)) {
            let this = this.value
            this.frameTimer = nil
            this.counters.hit(
                .frameTimeout, "closing connection: a frame was not completed within \(timeout)",
                metadata: this.metadata.merging(["buffered_bytes": "\(this.unfinishedBytes)"]) { $1 }, logger: this.logger
            )
            this.context?.close(promise: nil)
        }
    }

    private func stopFrameClock() {
        frameTimer?.cancel()
        frameTimer = nil
    }
}
