internal import NIOConcurrencyHelpers

/// A clock that moves only when told, for tests (`@_spi(Testing) import
/// Controller`): sleepers wake when
/// ``advance(by:)`` passes their deadline. ``sleepers`` lets a test wait
/// until the engine is parked before it moves time.
@_spi(Testing) public final class ManualPollClock: PollClock {
    private struct Sleeper {
        var deadline: Timestamp
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now: Timestamp
        var sleepers: [UInt64: Sleeper] = [:]
        var nextID: UInt64 = 0
        var parkedWaiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state: NIOLockedValueBox<State>

    public init(start: Timestamp = Timestamp(nanosecondsSinceEpoch: 1_700_000_000_000_000_000)) {
        state = NIOLockedValueBox(State(now: start))
    }

    public var now: Timestamp { state.withLockedValue { $0.now } }

    /// Tasks sleeping on this clock now.
    public var sleepers: Int { state.withLockedValue { $0.sleepers.count } }

    /// The earliest deadline a task sleeps until, if any sleeps: when a
    /// parked loop will wake.
    public var nextDeadline: Timestamp? { state.withLockedValue { $0.sleepers.values.map(\.deadline).min() } }

    public func sleep(until deadline: Timestamp) async throws {
        let id = state.withLockedValue { state -> UInt64 in
            defer { state.nextID += 1 }
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let (resumeNow, parked) = state.withLockedValue { state -> (Bool, [CheckedContinuation<Void, Never>]) in
                    if deadline <= state.now || Task.isCancelled { return (true, []) }
                    state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    return (false, Self.takeSatisfiedWaiters(&state))
                }
                if resumeNow {
                    if Task.isCancelled { continuation.resume(throwing: CancellationError()) } else { continuation.resume() }
                }
                for waiter in parked { waiter.resume() }
            }
        } onCancel: {
            let sleeper = state.withLockedValue { $0.sleepers.removeValue(forKey: id) }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward, waking every sleeper whose deadline has come.
    public func advance(by step: Duration) {
        let woken = state.withLockedValue { state -> [CheckedContinuation<Void, any Error>] in
            state.now = state.now + max(step, .zero)
            let due = state.sleepers.filter { $0.value.deadline <= state.now }
            for id in due.keys { state.sleepers.removeValue(forKey: id) }
            return due.values.map(\.continuation)
        }
        for continuation in woken { continuation.resume() }
    }

    /// Returns once at least `count` tasks sleep on this clock: the engine
    /// has finished its work and parked.
    public func waitForSleepers(_ count: Int = 1) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLockedValue { state -> Bool in
                if state.sleepers.count >= count { return true }
                state.parkedWaiters.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private static func takeSatisfiedWaiters(_ state: inout State) -> [CheckedContinuation<Void, Never>] {
        let count = state.sleepers.count
        let ready = state.parkedWaiters.filter { $0.count <= count }.map(\.continuation)
        state.parkedWaiters.removeAll { $0.count <= count }
        return ready
    }
}
