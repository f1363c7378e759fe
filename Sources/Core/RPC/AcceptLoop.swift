internal import NIOConcurrencyHelpers
package import NIOCore

/// The structured accept loop of a server built on a NIO `ServerBootstrap`
/// (``RPCServer``, the controller's metrics server): one task group per
/// listener, each accepted connection's life a child task of it.
///
/// The bootstrap sets its listener's `autoRead` to false (nothing is
/// accepted before ``run()``), and its child channel initializer, once a
/// connection is set up, hands it over with ``adopt(_:)``. ``run()``
/// serves until a stop is asked (``stop(_:)``, or its task is cancelled),
/// then closes: the listener first, then — after the drain, for a graceful
/// stop — every connection, and returns once they are closed. The
/// connections' handlers do the serving; this owns only their lifetime.
package final class AcceptLoop: Sendable {
    /// How to stop.
    package enum Stop: Sendable {
        /// Stop accepting and refuse new calls; let the calls in flight
        /// finish for up to `drain`, give clients up to `hangUpGrace` to
        /// close their connections first, then close the rest.
        case graceful(drain: Duration, hangUpGrace: Duration)
        /// Close every connection now, cancelling its calls.
        case immediate
    }

    private enum Phase {
        /// Listening; ``run()`` has not started.
        case bound
        case running
        case finished
    }

    private struct Lifecycle {
        var phase = Phase.bound
        var stop: Stop?
        var listener: (any Channel)?
    }

    private let lifecycle = NIOLockedValueBox(Lifecycle())
    private let accepted = ConnectionHandOff()
    /// The listener and the connections adopted, while open: what the end
    /// of ``run()`` waits on (bounded, see ``closeBound``).
    private let channels = InFlightCalls()
    /// The calls a graceful stop drains (nil: answers are written in the
    /// read that brought their request, so there is nothing to wait for).
    private let calls: InFlightCalls?
    private let onFinished: @Sendable () -> Void
    /// Opened by the first stop request.
    private let stopRequested = Latch()
    /// Told when an immediate stop comes during a graceful one.
    private let hangUpNow = AsyncStream.makeStream(of: Void.self)
    /// Opened when ``run()`` has returned (or a loop that never ran stopped).
    private let finished = Latch()

    /// How long ``run()`` waits, once it has told every connection to
    /// close, to see them closed. Only a handler that blocks its event loop
    /// (which then never runs the close) makes it wait this long; the close
    /// happens whenever that loop runs again.
    static let closeBound: Duration = .milliseconds(250)

    /// - Parameter onFinished: called once when the loop is done (e.g. to
    ///   remove the socket file).
    package convenience init(onFinished: @escaping @Sendable () -> Void = {}) {
        self.init(calls: nil, onFinished: onFinished)
    }

    init(calls: InFlightCalls?, onFinished: @escaping @Sendable () -> Void) {
        self.calls = calls
        self.onFinished = onFinished
    }

    /// The bound listener (once, before ``run()``).
    package func listening(on listener: any Channel) {
        lifecycle.withLockedValue { $0.listener = listener }
        track(listener)
    }

    /// Takes over a connection that its initializer has set up; false once
    /// the loop is stopping (the initializer then throws, and the channel is
    /// closed).
    package func adopt(_ channel: any Channel) -> Bool {
        track(channel)
        return accepted.offer(channel)
    }

    private func track(_ channel: any Channel) {
        _ = channels.begin()
        channel.closeFuture.whenComplete { [channels] _ in channels.end() }
    }

    /// Serves until asked to stop (cancelled: an immediate stop), then
    /// returns once the listener and every connection are closed. Runs
    /// once: a second call, or one after a stop, returns at once.
    package func run() async {
        let listener = lifecycle.withLockedValue { state -> (any Channel)?? in
            guard case .bound = state.phase else { return .none }
            state.phase = .running
            return .some(state.listener)
        }
        guard case .some(let listener) = listener else { return }
        _ = listener?.setOption(.autoRead, value: true)
        await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.acceptLoop() }
                await stopRequested.wait()
                if case .graceful(let drain, let hangUpGrace) = lifecycle.withLockedValue({ $0.stop }) {
                    // Whichever comes first: every client has hung up; the
                    // drain and the grace are over; an immediate stop.
                    group.addTask {
                        await self.calls?.waitUntilIdle(limit: drain)
                        try? await Task.sleep(for: hangUpGrace)
                    }
                    group.addTask {
                        for await _ in self.hangUpNow.stream { return }
                    }
                    await group.next()
                }
                // Every connection still open is closed now (its calls cancelled).
                group.cancelAll()
            }
        } onCancel: {
            _ = requestStop(.immediate)
        }
        await finish()
    }

    /// Waits (bounded) until the listener and every connection are closed;
    /// then the loop is done.
    private func finish() async {
        await channels.waitUntilIdle(limit: Self.closeBound)
        lifecycle.withLockedValue { $0.phase = .finished }
        onFinished()
        finished.open()
    }

    /// Asks the loop to stop; an immediate stop cuts a graceful one short.
    /// True when ``run()`` never started (and now will not): the caller
    /// then finishes the loop.
    private func requestStop(_ stop: Stop) -> Bool {
        let (first, escalates, neverRan, listener) = lifecycle.withLockedValue { state -> (Bool, Bool, Bool, (any Channel)?) in
            let first = state.stop == nil
            var escalates = false
            switch (state.stop, stop) {
            case (nil, _):
                state.stop = stop
            case (.graceful, .immediate):
                state.stop = stop
                escalates = true
            default:
                break
            }
            guard case .bound = state.phase else { return (first, escalates, false, state.listener) }
            state.phase = .finished
            return (first, escalates, true, state.listener)
        }
        if case .graceful = stop { calls?.startDraining() }
        if first {
            accepted.finish()
            listener?.close(promise: nil)
            stopRequested.open()
        }
        if escalates { hangUpNow.continuation.yield() }
        return neverRan
    }

    /// Asks the loop to stop and returns once it has (cancelled: the stop
    /// becomes immediate). Before ``run()`` started, nothing was accepted:
    /// only the listener closes.
    package func stop(_ stop: Stop) async {
        if requestStop(stop) {
            await finish()
            return
        }
        await withTaskCancellationHandler {
            await finished.wait()
        } onCancel: {
            _ = requestStop(.immediate)
        }
    }

    /// Gives each adopted connection its life as a child task until the
    /// loop stops taking them; returns once every one has ended.
    private func acceptLoop() async {
        await withDiscardingTaskGroup { group in
            while let channel = await accepted.next() {
                group.addTask { await Self.life(of: channel) }
            }
        }
    }

    /// Lasts as long as the connection. Cancelled, it closes the connection
    /// and returns without waiting for the close (a handler may be blocking
    /// the connection's event loop): ``run()`` waits for that, bounded.
    private static func life(of channel: any Channel) async {
        let (closed, markClosed) = AsyncStream.makeStream(of: Void.self)
        channel.closeFuture.whenComplete { _ in markClosed.finish() }
        for await _ in closed {}
        if Task.isCancelled { channel.close(promise: nil) }
    }
}

/// Accepted connections on their way from the listener's initializer to
/// the ``AcceptLoop``, whose task group gives each one its life as a child
/// task.
///
/// Unlike an `AsyncStream`, ``next()`` does not end when its task is
/// cancelled: every connection handed over reaches the accept loop (which,
/// cancelled, closes it at once), so none is left open and unowned. Once
/// ``finish()`` is called nothing more is taken; what was taken is still
/// handed out.
final class ConnectionHandOff: Sendable {
    private struct State {
        var waiting: [any Channel] = []
        var consumer: CheckedContinuation<(any Channel)?, Never>?
        var finished = false
    }

    private let state = NIOLockedValueBox(State())

    /// Hands `channel` over; false once finished (the server is stopping:
    /// the caller closes it).
    func offer(_ channel: any Channel) -> Bool {
        let (taken, consumer) = state.withLockedValue { state -> (Bool, CheckedContinuation<(any Channel)?, Never>?) in
            guard !state.finished else { return (false, nil) }
            if let consumer = state.consumer {
                state.consumer = nil
                return (true, consumer)
            }
            state.waiting.append(channel)
            return (true, nil)
        }
        consumer?.resume(returning: channel)
        return taken
    }

    /// Takes nothing more; the consumer gets what waits, then nil.
    func finish() {
        let consumer = state.withLockedValue { state -> CheckedContinuation<(any Channel)?, Never>? in
            state.finished = true
            guard state.waiting.isEmpty else { return nil }
            defer { state.consumer = nil }
            return state.consumer
        }
        consumer?.resume(returning: nil)
    }

    /// The next connection, or nil once finished and empty. One consumer.
    func next() async -> (any Channel)? {
        await withCheckedContinuation { (continuation: CheckedContinuation<(any Channel)?, Never>) in
            let ready = state.withLockedValue { state -> (any Channel)?? in
                if !state.waiting.isEmpty { return .some(state.waiting.removeFirst()) }
                if state.finished { return .some(nil) }
                state.consumer = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// An event that happens once and that any number of tasks wait for.
package final class Latch: Sendable {
    private struct State {
        var open = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = NIOLockedValueBox(State())

    package init() {}

    package func open() {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            guard !state.open else { return [] }
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once open (at once if it is).
    package func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let open = state.withLockedValue { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if open { continuation.resume() }
        }
    }
}
