#if canImport(Glibc)
internal import Glibc
#endif
internal import NIOConcurrencyHelpers

/// Time since the fake shim started: what scenario timelines and fault
/// windows are measured against.
public protocol FakeClock: Sendable {
    func elapsed() -> Duration
}

/// The wall clock, from the moment it was made.
public struct WallFakeClock: FakeClock {
    private let start = ContinuousClock.now
    private let offset: Duration

    /// Scenario time starts now.
    public init() { offset = .zero }

    /// Scenario time 0 was `epoch` (wall clock, since 1970): a restarted or
    /// swapped-in shim picks its timelines up where the previous one was.
    public init(epochSeconds epoch: Double) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let seconds = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 - epoch
        offset = .nanoseconds(Int64((seconds * 1e9).rounded()))
    }

    public func elapsed() -> Duration { ContinuousClock.now - start + offset }
}

/// A clock that moves only when told: tests and `--manual-clock` drive
/// timelines deterministically with it.
public final class ManualFakeClock: FakeClock {
    private let now = NIOLockedValueBox(Duration.zero)
    public init() {}
    public func elapsed() -> Duration { now.withLockedValue { $0 } }

    /// Moves the clock forward and returns the new time.
    @discardableResult
    public func advance(by step: Duration) -> Duration {
        now.withLockedValue { now in
            now += max(step, .zero)
            return now
        }
    }
}
