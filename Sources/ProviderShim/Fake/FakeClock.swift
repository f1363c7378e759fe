internal import NIOConcurrencyHelpers

/// Time since the fake shim started: what scenario timelines and fault
/// windows are measured against.
public protocol FakeClock: Sendable {
    func elapsed() -> Duration
}

/// The wall clock, from the moment it was made.
public struct WallFakeClock: FakeClock {
    private let start = ContinuousClock.now
    public init() {}
    public func elapsed() -> Duration { ContinuousClock.now - start }
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
