internal import Core
public import Logging
#if canImport(Glibc)
internal import Glibc
#endif

/// How shims are watched and restarted (`docs/DESIGN.md` §6.4).
public struct SupervisionSettings: Hashable, Sendable {
    public var healthInterval: Duration = .seconds(5)
    public var healthTimeout: Duration = .seconds(2)
    /// Failed health checks in a row that count as a dead shim.
    public var failedChecksBeforeRestart = 3
    public var initialBackoff: Duration = .seconds(1)
    public var maximumBackoff: Duration = .seconds(30)
    /// Running this long resets the backoff.
    public var healthyResetAfter: Duration = .seconds(60)
    public var startupTimeout: Duration = .seconds(10)
    /// How long a stopping shim may finish its calls in flight.
    public var drainTimeout: Duration = .seconds(10)
    /// After `Shutdown`, how long before SIGTERM, and after SIGTERM before SIGKILL.
    public var exitGrace: Duration = .seconds(2)

    public init() {}
}

/// Keeps one provider's shim running: starts it, checks its health, restarts
/// it with backoff when it exits or stops answering, and stops it cleanly.
///
/// ``access`` is what the poller calls: it routes to whichever shim is live,
/// and fails at once with Unavailable while none is.
public actor ProviderSupervisor {
    public let provider: String
    public nonisolated let access: SupervisedCloudAccess
    private var command: ShimCommand
    private let runtimeDirectory: String
    private let clock: any PollClock
    private let settings: SupervisionSettings
    private let logger: Logger
    private let metrics: ControllerMetrics?

    private var current: RunningShim?
    private var generation = 0
    private var backoff: Duration
    /// Starts after the first (a restart count).
    public private(set) var restarts = 0
    /// Why the last start or run ended, for operators; cleared once a
    /// shim started after it has answered a health check serving.
    public private(set) var lastProblem: String?
    /// When ``lastProblem`` happened.
    public private(set) var lastProblemAt: Timestamp?
    /// While waiting out the backoff: when the next start is due.
    private var nextStart: Timestamp?
    /// Why the last refused swap was refused (the old shim kept serving), and when.
    public private(set) var lastRefusedSwap: (reason: String, at: Timestamp)?

    public init(
        provider: String,
        command: ShimCommand,
        runtimeDirectory: String,
        clock: any PollClock,
        settings: SupervisionSettings = SupervisionSettings(),
        callTimeout: Duration = .seconds(30),
        metrics: ControllerMetrics? = nil,
        logger: Logger
    ) {
        self.metrics = metrics
        self.provider = provider
        self.command = command
        self.runtimeDirectory = runtimeDirectory
        self.clock = clock
        self.settings = settings
        self.logger = logger
        self.backoff = settings.initialBackoff
        self.access = SupervisedCloudAccess(provider: provider, timeout: callTimeout)
        (events, eventContinuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(Self.eventBuffer))
    }

    /// The live shim's pid, if one runs.
    public var pid: Int32? { current?.process.pid }

    /// Supervises until cancelled, then stops the shim.
    public func run() async {
        var needsRestart = false
        while !Task.isCancelled {
            let shim: RunningShim
            if let live = current {
                shim = live  // swapped in while the previous one was watched
            } else {
                if needsRestart {
                    restarts += 1
                    let due = clock.now + backoff
                    nextStart = due
                    emit(.restarting(after: backoff))
                    logger.warning("restarting shim", metadata: ["provider": "\(provider)", "after": "\(backoff)", "why": "\(lastProblem ?? "")"])
                    do { try await clock.sleep(until: due) } catch { break }
                    nextStart = nil
                    backoff = min(backoff * 2, settings.maximumBackoff)
                    // A swap may have brought a shim in during the backoff.
                    if current != nil { continue }
                }
                needsRestart = true
                do {
                    shim = try await launch(command)
                } catch {
                    problem("\(error)")
                    access.settle()
                    emit(.failedToStart(reason: "\(error)"))
                    logger.error("shim failed to start", metadata: ["provider": "\(provider)", "error": "\(error)"])
                    continue
                }
                current = shim
                access.route(to: shim.client)
                emit(.started(pid: shim.process.pid))
            }
            let started = clock.now
            let ended = await watch(shim)
            if Task.isCancelled { break }
            // Replaced by a swap: the old one is being drained elsewhere.
            if current?.process.pid != shim.process.pid { continue }
            access.route(to: nil)
            current = nil
            problem(ended)
            emit(.down(reason: ended))
            logger.warning("shim down", metadata: ["provider": "\(provider)", "why": "\(ended)"])
            await terminate(shim, graceful: false)
            if clock.now - started >= settings.healthyResetAfter { backoff = settings.initialBackoff }
        }
        if let shim = current {
            access.route(to: nil)
            current = nil
            // Stopping runs outside the cancelled task, so that `Shutdown`
            // and the drain are not cut short by the cancellation itself.
            await Task { await self.terminate(shim, graceful: true) }.value
        }
        emit(.stopped)
        eventContinuation.finish()
    }

    private func problem(_ text: String) {
        lastProblem = text
        lastProblemAt = clock.now
    }

    /// A shim answered a health check serving: a problem from before it
    /// started is over.
    private func servedHealthily(pid: Int32) {
        guard current?.process.pid == pid, lastProblem != nil else { return }
        logger.info("shim serves healthily again; last problem cleared", metadata: ["provider": "\(provider)", "pid": "\(pid)"])
        lastProblem = nil
        lastProblemAt = nil
        emit(.problemCleared(pid: pid))
    }

    private func launch(_ command: ShimCommand) async throws(ShimStartError) -> RunningShim {
        generation += 1
        var directory = runtimeDirectory
        if command.dropsPrivileges, let user = command.user {
            // It cannot bind in the controller's directory: it gets its own.
            do {
                directory = try ShimDirectory.prepare(runtimeDirectory: runtimeDirectory, provider: provider, user: user)
            } catch {
                throw ShimStartError(provider: provider, problem: "\(error)", stderrTail: "")
            }
        }
        return try await ShimLauncher.start(
            provider: provider, command: command, socketPath: "\(directory)/\(provider)-\(generation).sock",
            startupTimeout: settings.startupTimeout, logger: logger
        )
    }

    /// A check a new shim must pass before it takes over, e.g. validating
    /// the provider's credentials through it. Throwing refuses the swap.
    public typealias SwapCheck = @Sendable (ProviderClient) async throws -> Void

    /// Swaps the backend live: starts and handshakes the new shim, runs
    /// `check` through it, routes new calls to it, lets the old one finish
    /// its calls in flight (bounded by the drain timeout), then stops it
    /// (`Shutdown`, SIGTERM, SIGKILL). If the new shim fails, the old one
    /// keeps serving and the error says why.
    /// A refused swap is remembered (``lastRefusedSwap``) for operators.
    public func swap(to newCommand: ShimCommand, check: SwapCheck = { _ in }) async throws(ShimStartError) {
        let new: RunningShim
        do {
            new = try await launch(newCommand)
        } catch {
            lastRefusedSwap = ("\(error)", clock.now)
            throw error
        }
        do {
            try await check(new.client)
        } catch {
            await terminate(new, graceful: false)
            let refusal = ShimStartError(provider: provider, problem: "the new shim failed its checks: \(error)", stderrTail: new.stderrTail.text)
            lastRefusedSwap = ("\(refusal)", clock.now)
            throw refusal
        }
        let old = current
        current = new
        nextStart = nil
        command = newCommand
        access.route(to: new.client)
        emit(.swapped(pid: new.process.pid))
        logger.info("shim swapped", metadata: ["provider": "\(provider)", "pid": "\(new.process.pid)"])
        if let old {
            await old.client.connection.waitUntilIdle(limit: settings.drainTimeout)
            await terminate(old, graceful: true)
        }
    }

    /// What happens to the shim, for tests, logs and metrics.
    public enum Event: Hashable, Sendable {
        case started(pid: Int32)
        case failedToStart(reason: String)
        case down(reason: String)
        /// A restart is scheduled after this backoff.
        case restarting(after: Duration)
        /// A new shim took over by a live swap.
        case swapped(pid: Int32)
        /// A shim started after a problem answered its first health check
        /// serving: the problem is cleared.
        case problemCleared(pid: Int32)
        case stopped
    }

    /// Everything that happens to this provider's shim, in order. Nothing
    /// in the controller reads it (tests and embedders may): unread, it
    /// keeps the newest ``eventBuffer`` events, so a shim that crash-loops
    /// for weeks costs no memory.
    public nonisolated let events: AsyncStream<Event>
    /// The most events ``events`` holds unread.
    public static let eventBuffer = 1024
    private nonisolated let eventContinuation: AsyncStream<Event>.Continuation

    private func emit(_ event: Event) {
        switch event {
        case .started, .swapped: metrics?.shim(provider: provider, up: true)
        case .down, .failedToStart: metrics?.shim(provider: provider, up: false)
        case .restarting: metrics?.shimRestarted(provider: provider)
        case .problemCleared, .stopped: break
        }
        eventContinuation.yield(event)
    }

    /// The shim as operators see it (`providers list`).
    public struct Snapshot: Sendable {
        public enum State: String, Hashable, Sendable {
            /// Its first start is under way.
            case starting
            /// A shim serves.
            case running
            /// It stopped or failed to start, and is waiting to start again
            /// (``nextStart``) or starting again.
            case restarting
        }

        public var command: ShimCommand
        public var state: State
        /// nil while no shim runs (between restarts).
        public var pid: Int32?
        public var shimName: String
        public var shimVersion: String
        public var restarts: Int
        public var lastProblem: String?
        public var lastProblemAt: Timestamp?
        /// While restarting: when the next start is due (nil while a start
        /// is under way).
        public var nextStart: Timestamp?
        public var lastRefusedSwap: String?
        public var lastRefusedSwapAt: Timestamp?
    }

    public var snapshot: Snapshot {
        let state: Snapshot.State = current != nil ? .running : (restarts == 0 && lastProblem == nil ? .starting : .restarting)
        return Snapshot(
            command: command, state: state, pid: current?.process.pid,
            shimName: current?.handshake.shimName ?? "", shimVersion: current?.handshake.shimVersion ?? "",
            restarts: restarts, lastProblem: lastProblem, lastProblemAt: lastProblemAt,
            nextStart: current == nil ? nextStart : nil,
            lastRefusedSwap: lastRefusedSwap?.reason, lastRefusedSwapAt: lastRefusedSwap?.at
        )
    }

    /// Returns why the shim stopped serving: it exited, or failed health
    /// checks in a row (whichever comes first; the other wait is
    /// cancelled), or "stopped" when the supervisor is cancelled.
    private func watch(_ shim: RunningShim) async -> String {
        await withTaskGroup(of: String?.self) { group in
            group.addTask { await shim.process.exitUnlessCancelled().map { "exited with status \($0)" } }
            group.addTask { await self.checkHealth(of: shim) }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? "stopped"
        }
    }

    /// Checks the shim's health every interval until it fails enough
    /// checks in a row (returns why) or the task is cancelled (nil).
    private nonisolated func checkHealth(of shim: RunningShim) async -> String? {
        var failures = 0
        var servedOnce = false
        while !Task.isCancelled {
            do { try await clock.sleep(until: clock.now + settings.healthInterval) } catch { return nil }
            do {
                let answer = try await shim.client.health(timeout: settings.healthTimeout)
                failures = answer.status == .serving ? 0 : failures + 1
                if answer.status == .serving, !servedOnce {
                    servedOnce = true
                    await servedHealthily(pid: shim.process.pid)
                }
            } catch {
                failures += 1
            }
            if failures >= settings.failedChecksBeforeRestart {
                return "failed \(failures) health checks in a row"
            }
        }
        return nil
    }

    /// Stops a shim: `Shutdown` and a bounded drain when `graceful` (else
    /// SIGTERM at once), then SIGTERM, then SIGKILL to its process group;
    /// removes its socket.
    private func terminate(_ shim: RunningShim, graceful: Bool) async {
        await Self.terminate(shim, graceful: graceful, settings: settings)
    }

    /// ``terminate(_:graceful:)`` under `settings`: also how
    /// `instancepoller check-config --connect` stops the shims it started.
    static func terminate(_ shim: RunningShim, graceful: Bool, settings: SupervisionSettings) async {
        if graceful, shim.process.exitStatus == nil {
            try? await shim.client.shutdown(drainTimeout: settings.drainTimeout, timeout: settings.exitGrace)
            // Hang up, so the shim need not wait for us before it exits.
            await shim.client.connection.close()
            if await Self.exited(shim, within: settings.drainTimeout + settings.exitGrace) == false {
                shim.process.signalGroup(SIGTERM)
            }
        } else {
            shim.process.signalGroup(SIGTERM)
        }
        if await Self.exited(shim, within: settings.exitGrace) == false {
            shim.process.signalGroup(SIGKILL)
            _ = await shim.process.waitForExit()
        }
        await shim.client.connection.close()
        UnixSocket.remove(shim.socketPath)
    }

    private static func exited(_ shim: RunningShim, within limit: Duration) async -> Bool {
        if shim.process.exitStatus != nil { return true }
        return await firstWithin(limit) { await shim.process.waitForExit() } != nil
    }
}
