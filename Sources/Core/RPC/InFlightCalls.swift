internal import NIOConcurrencyHelpers

/// Calls in flight (across a server's connections, or on a client's one),
/// and whether new ones are refused: what a graceful shutdown or a swap's
/// drain waits on.
final class InFlightCalls: Sendable {
    private struct State {
        var count = 0
        var draining = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = NIOLockedValueBox(State())

    /// Counts a new call in; false when draining (the call must be refused).
    func begin() -> Bool {
        state.withLockedValue { state in
            guard !state.draining else { return false }
            state.count += 1
            return true
        }
    }

    func end() {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.count -= 1
            guard state.count == 0 else { return [] }
            defer { state.idleWaiters = [] }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    var count: Int { state.withLockedValue { $0.count } }

    func startDraining() {
        state.withLockedValue { $0.draining = true }
    }

    /// Returns when no call is in flight, or after `limit`, whichever is first.
    func waitUntilIdle(limit: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let idle = self.state.withLockedValue { state -> Bool in
                        if state.count == 0 { return true }
                        state.idleWaiters.append(continuation)
                        return false
                    }
                    if idle { continuation.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
            // The idle waiter cannot be cancelled: release it if still parked.
            let parked = self.state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
                defer { state.idleWaiters = [] }
                return state.idleWaiters
            }
            for waiter in parked { waiter.resume() }
        }
    }
}
