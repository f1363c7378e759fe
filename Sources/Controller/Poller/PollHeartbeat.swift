internal import NIOConcurrencyHelpers

/// The poll loop's pulse, read without waiting for the engine: the loop
/// beats when it starts, at every turn (whether the round succeeded or not:
/// a store that is down is not a wedged loop) and after every batch within
/// a round, so that a long sweep of calls, each bounded by the call
/// timeout, still beats.
///
/// The systemd watchdog pings only while the last beat is recent, and
/// `/readyz` reports a loop that stopped turning (docs/DESIGN.md §6.6).
public final class PollHeartbeat: Sendable {
    /// What the loop last said.
    public struct Pulse: Sendable, Hashable {
        /// When the loop started turning.
        public var started: Timestamp
        /// The last beat (the start, before any turn).
        public var last: Timestamp
        /// Finished turns (rounds) so far.
        public var turns: Int
        /// The machines the loop tracks, as of the last finished turn.
        public var machines: Int
    }

    private let state = NIOLockedValueBox<Pulse?>(nil)

    public init() {}

    /// nil until the loop starts.
    public var pulse: Pulse? { state.withLockedValue { $0 } }

    /// How long since the last beat at `now`; nil before the loop starts.
    public func age(at now: Timestamp) -> Duration? {
        state.withLockedValue { $0 }.map { now - $0.last }
    }

    /// The loop starts turning.
    func started(at now: Timestamp) {
        state.withLockedValue { $0 = Pulse(started: now, last: now, turns: 0, machines: $0?.machines ?? 0) }
    }

    /// The loop finished a turn, tracking `machines` machines.
    func turned(at now: Timestamp, machines: Int) {
        state.withLockedValue { pulse in
            guard var beat = pulse else {
                pulse = Pulse(started: now, last: now, turns: 1, machines: machines)
                return
            }
            beat.last = max(beat.last, now)
            beat.turns += 1
            beat.machines = machines
            pulse = beat
        }
    }

    /// Progress within a turn (a batch done).
    func progressed(at now: Timestamp) {
        state.withLockedValue { pulse in
            guard pulse != nil else { return }
            pulse!.last = max(pulse!.last, now)
        }
    }
}
