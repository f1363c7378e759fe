internal import Core
internal import Logging
internal import ServiceLifecycle
internal import NIOConcurrencyHelpers

/// What the controller tells the service manager, and when
/// (docs/DESIGN.md §6.6):
///
/// - `READY=1` with `STATUS=`: once every service has started (the store is
///   open) and every shim has started or is waiting out a backoff;
/// - `STATUS=`: when the summary changes, looked at every
///   ``statusInterval`` at most;
/// - `WATCHDOG=1`: every half of `$WATCHDOG_USEC` while the poll loop's last
///   beat is younger than `$WATCHDOG_USEC` — a wedged loop is not pinged
///   for, so the manager restarts the controller;
/// - `RELOADING=1` then `READY=1` around a SIGHUP reload;
/// - `STOPPING=1` when the graceful stop begins (no ping after it).
///
/// Also moves ``ControllerHealth`` from starting to serving to stopping, so
/// it runs whether or not a manager listens. Late in the group (stopped
/// among the first): its stop is the stop's beginning.
final class ServiceNotifications: Service {
    let notifier: SystemdNotifier
    let health: ControllerHealth
    private let clock: any PollClock
    /// Opened once every other service has started (set before the group
    /// runs: the chain is built after the signal service that tells this).
    var after: StartGate? {
        get { afterGate.withLockedValue { $0 } }
        set { afterGate.withLockedValue { $0 = newValue } }
    }
    private let afterGate = NIOLockedValueBox<StartGate?>(nil)
    private let logger: Logger
    /// How often the summary is looked at for a change.
    let statusInterval: Duration
    /// How often the shims are looked at while waiting for them to settle.
    let settleInterval: Duration

    private struct State {
        var ready = false
        var stopping = false
        var status: String?
        /// The poll loop was found stalled at the last ping (logged once per stall).
        var stalled = false
    }

    private let state = NIOLockedValueBox(State())

    init(
        notifier: SystemdNotifier, health: ControllerHealth, clock: any PollClock, after: StartGate?, logger: Logger,
        statusInterval: Duration = .seconds(5), settleInterval: Duration = .milliseconds(100)
    ) {
        self.notifier = notifier
        self.health = health
        self.clock = clock
        afterGate.withLockedValue { $0 = after }
        self.logger = logger
        self.statusInterval = statusInterval
        self.settleInterval = settleInterval
    }

    func run() async {
        if let interval = notifier.watchdogInterval {
            let metadata: Logger.Metadata = [
                "watchdog": "\(ControllerHealth.text(interval))", "poll_stall_limit": "\(ControllerHealth.text(health.pollStallLimit))",
            ]
            if interval < health.pollStallLimit {
                // A slow call (up to the call timeout) is silence too.
                logger.notice("the watchdog interval is shorter than the poll loop may be silent; a slow provider call may get the controller restarted (raise WatchdogSec=)", metadata: metadata)
            } else {
                logger.debug("the service manager's watchdog is on", metadata: metadata)
            }
        }
        await cancelWhenGracefulShutdown { await self.serve() }
        stopping()
    }

    /// Waits for the start, says ready, then keeps the watchdog and the
    /// status until cancelled.
    func serve() async {
        await after?.wait()
        do {
            while !Task.isCancelled, !(await health.shimsSettled()) {
                try await clock.sleep(until: clock.now + settleInterval)
            }
        } catch {
            return
        }
        guard !Task.isCancelled else { return }
        await ready()
        let halfInterval = notifier.watchdogInterval.map { $0 / 2 }
        var nextPing = halfInterval.map { clock.now + $0 }
        var nextStatus = clock.now + statusInterval
        while !Task.isCancelled {
            let wake = nextPing.map { min($0, nextStatus) } ?? nextStatus
            do { try await clock.sleep(until: wake) } catch { return }
            let now = clock.now
            if let due = nextPing, let halfInterval, now >= due {
                pingIfAlive(at: now)
                nextPing = now + halfInterval
            }
            if now >= nextStatus {
                await updateStatus()
                nextStatus = now + statusInterval
            }
        }
    }

    /// `READY=1` and the status; the controller is serving.
    func ready() async {
        health.set(.serving)
        let status = await health.summary()
        let send = state.withLockedValue { state -> Bool in
            guard !state.stopping else { return false }
            state.ready = true
            state.status = status
            return true
        }
        guard send else { return }
        notifier.send([("READY", "1"), ("STATUS", status)])
        logger.debug("told the service manager: ready", metadata: ["status": "\(status)"])
    }

    /// A reload begins (nothing is said before the first `READY=1`: that one
    /// comes when the start is done).
    func reloading() {
        guard state.withLockedValue({ $0.ready && !$0.stopping }) else { return }
        notifier.send([("RELOADING", "1"), ("MONOTONIC_USEC", "\(SystemdNotifier.monotonicMicroseconds())")])
    }

    /// The reload is done, whether or not it changed anything: serving again.
    func reloaded() async {
        guard state.withLockedValue({ $0.ready && !$0.stopping }) else { return }
        await ready()
    }

    /// `STOPPING=1`, once; no ping or status after it.
    func stopping() {
        health.set(.stopping)
        let first = state.withLockedValue { state -> Bool in
            defer { state.stopping = true }
            return !state.stopping
        }
        guard first else { return }
        notifier.send([("STOPPING", "1")])
    }

    /// `WATCHDOG=1` if the poll loop beat within `$WATCHDOG_USEC` of `now`.
    func pingIfAlive(at now: Timestamp) {
        guard let interval = notifier.watchdogInterval else { return }
        let age = health.heartbeat.age(at: now)
        let alive = age.map { $0 <= interval } ?? false
        let (go, newlyStalled, recovered) = state.withLockedValue { state -> (Bool, Bool, Bool) in
            guard state.ready, !state.stopping else { return (false, false, false) }
            defer { state.stalled = !alive }
            return (alive, !alive && !state.stalled, alive && state.stalled)
        }
        if newlyStalled {
            logger.error(
                "the poll loop has not turned within the watchdog interval: no watchdog ping, so the service manager restarts the controller",
                metadata: ["last_turn": "\(age.map { ControllerHealth.text($0) + " ago" } ?? "never")", "watchdog": "\(ControllerHealth.text(interval))"])
        } else if recovered {
            logger.notice("the poll loop turns again; watchdog pings resume")
        }
        if go { notifier.send([("WATCHDOG", "1")]) }
    }

    /// `STATUS=` when the summary changed since it was last sent.
    func updateStatus() async {
        let status = await health.summary()
        let changed = state.withLockedValue { state -> Bool in
            guard state.ready, !state.stopping, state.status != status else { return false }
            state.status = status
            return true
        }
        if changed { notifier.send([("STATUS", status)]) }
    }
}
