internal import Core
internal import NIOConcurrencyHelpers

/// Whether the controller is ready, and a one-line summary of what it does:
/// read by `/readyz` and by the service manager's notifications
/// (docs/DESIGN.md §6.6).
///
/// Ready means: the controller has started and is not stopping, the store
/// answers, the poll loop turns (a beat within ``pollStallLimit``), and each
/// provider's shim serves.
final class ControllerHealth: HealthReporting {
    /// Where the controller is in its life.
    enum Phase: Sendable, Hashable {
        /// Until every service has started and every shim has started or is
        /// in backoff.
        case starting
        case serving
        /// From the start of a graceful stop.
        case stopping
    }

    /// One provider's shim, as readiness sees it.
    struct ShimState: Sendable, Hashable {
        var provider: String
        var state: ProviderSupervisor.Snapshot.State
        var lastProblem: String?
        /// While waiting out a backoff: when the next start is due.
        var nextStart: Timestamp?
    }

    /// The shims of the providers that run here; nil until the fleet has
    /// launched them.
    typealias ShimStates = @Sendable () async -> [ShimState]?
    /// A cheap read of the store: throws when it cannot answer.
    typealias StoreCheck = @Sendable () async throws -> Void

    private let storeCheck: StoreCheck
    private let shims: ShimStates
    let heartbeat: PollHeartbeat
    private let clock: any PollClock
    /// A poll loop without a beat for longer is reported as stalled: the
    /// loop beats at least every watch interval, and within a round after
    /// each batch (a call, bounded by the call timeout, and its write).
    let pollStallLimit: Duration
    private let storeTimeout: Duration
    private let phase = NIOLockedValueBox(Phase.starting)

    init(
        storeCheck: @escaping StoreCheck, shims: @escaping ShimStates, heartbeat: PollHeartbeat, clock: any PollClock,
        pollStallLimit: Duration, storeTimeout: Duration = .seconds(1)
    ) {
        self.storeCheck = storeCheck
        self.shims = shims
        self.heartbeat = heartbeat
        self.clock = clock
        self.pollStallLimit = pollStallLimit
        self.storeTimeout = storeTimeout
    }

    /// The bound for a poll loop's silence: the watch interval plus two
    /// call timeouts (the slowest provider's), enough for a batch's call
    /// and its write however the round is laid out.
    static func pollStallLimit(watchInterval: Duration, callTimeouts: [Duration]) -> Duration {
        watchInterval + (callTimeouts.max() ?? .seconds(30)) * 2
    }

    var currentPhase: Phase { phase.withLockedValue { $0 } }

    func set(_ next: Phase) {
        phase.withLockedValue { current in
            // Stopping is for good.
            if current != .stopping { current = next }
        }
    }

    /// Every shim started (serving) or failed and waits out its backoff:
    /// none is still in its first start.
    func shimsSettled() async -> Bool {
        guard let states = await shims() else { return false }
        return states.allSatisfy { $0.state != .starting }
    }

    func problems() async -> [HealthProblem] {
        var problems: [HealthProblem] = []
        switch currentPhase {
        case .starting: problems.append(HealthProblem(subject: "controller", problem: "starting"))
        case .stopping: problems.append(HealthProblem(subject: "controller", problem: "stopping"))
        case .serving: break
        }
        if let store = await storeProblem() { problems.append(store) }
        if let loop = pollLoopProblem(at: clock.now) { problems.append(loop) }
        problems += shimProblems(await shims() ?? [], at: clock.now)
        return problems
    }

    private func storeProblem() async -> HealthProblem? {
        let check = storeCheck
        let outcome = await firstWithin(storeTimeout) { () async -> Result<Void, any Error> in
            do {
                try await check()
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        switch outcome {
        case nil: return HealthProblem(subject: "store", problem: "no answer within \(Self.text(storeTimeout))")
        case .failure(let error)?: return HealthProblem(subject: "store", problem: "unavailable", detail: "\(error)")
        case .success?: return nil
        }
    }

    func pollLoopProblem(at now: Timestamp) -> HealthProblem? {
        guard let age = heartbeat.age(at: now) else { return HealthProblem(subject: "poll loop", problem: "not started") }
        guard age > pollStallLimit else { return nil }
        return HealthProblem(subject: "poll loop", problem: "no turn for \(Self.text(age))")
    }

    func shimProblems(_ states: [ShimState], at now: Timestamp) -> [HealthProblem] {
        states.compactMap { shim in
            let subject = "provider \(shim.provider)"
            switch shim.state {
            case .running:
                return nil
            case .starting:
                return HealthProblem(subject: subject, problem: "shim starting")
            case .restarting:
                let next = shim.nextStart.map { "restarting in \(Self.text(max($0 - now, .zero)))" } ?? "starting again"
                return HealthProblem(subject: subject, problem: "shim down", detail: shim.lastProblem, next: next)
            }
        }
    }

    /// `polling 1200 machines with 2 providers (1 shim down)`: one line for
    /// the service manager's `STATUS=`. It says what readiness says, short.
    func summary() async -> String {
        let states = await shims() ?? []
        let now = clock.now
        let providers = states.count == 1 ? "1 provider" : "\(states.count) providers"
        var text: String
        if let pulse = heartbeat.pulse, pulse.turns > 0 {
            text = "polling \(pulse.machines == 1 ? "1 machine" : "\(pulse.machines) machines") with \(providers)"
        } else {
            text = "loading machines for \(providers)"
        }
        let down = states.filter { $0.state == .restarting }.count
        let starting = states.filter { $0.state == .starting }.count
        var notes: [String] = []
        if down > 0 { notes.append(down == 1 ? "1 shim down" : "\(down) shims down") }
        if starting > 0 { notes.append("\(starting) starting") }
        if !notes.isEmpty { text += " (\(notes.joined(separator: ", ")))" }
        if let loop = pollLoopProblem(at: now), heartbeat.pulse != nil { text += "; \(loop.line(detailed: false))" }
        if currentPhase == .stopping { text = "stopping: " + text }
        return text
    }

    /// "2s", "0.4s", "45s", "3m20s".
    static func text(_ duration: Duration) -> String {
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        if milliseconds < 10_000 {
            let tenths = (milliseconds + 99) / 100
            return tenths % 10 == 0 ? "\(tenths / 10)s" : "\(tenths / 10).\(tenths % 10)s"
        }
        let seconds = (milliseconds + 999) / 1000
        return seconds < 600 ? "\(seconds)s" : "\(seconds / 60)m\(seconds % 60)s"
    }
}

extension ProviderFleet {
    /// The shims of the providers running here, for ``ControllerHealth``;
    /// nil until ``run()`` has launched the configured ones.
    func shimStates() async -> [ControllerHealth.ShimState]? {
        guard launched else { return nil }
        return await snapshots().map { config, snapshot in
            ControllerHealth.ShimState(provider: config.name, state: snapshot.state, lastProblem: snapshot.lastProblem, nextStart: snapshot.nextStart)
        }
    }
}
