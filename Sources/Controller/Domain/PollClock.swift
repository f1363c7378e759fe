#if canImport(Glibc)
internal import Glibc
#endif

/// The time source of the poll engine, injected so that tests drive it.
public protocol PollClock: Sendable {
    var now: Timestamp { get }
    /// Returns at `deadline` (or at once if it has passed); throws
    /// CancellationError when the task is cancelled.
    func sleep(until deadline: Timestamp) async throws
}

/// The system's real-time clock.
public struct SystemPollClock: PollClock {
    public init() {}

    public var now: Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(nanosecondsSinceEpoch: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }

    public func sleep(until deadline: Timestamp) async throws {
        let wait = deadline - now
        if wait > .zero { try await Task.sleep(for: wait) }
    }
}
