import NIOConcurrencyHelpers

/// Holds the calls that pass it while a test says so, to keep them in
/// flight: ``hold()``, then ``waitUntilHeld(_:)`` to know they arrived, then
/// ``release()``.
final class CallGate: Sendable {
    private struct State {
        var holding = false
        var held: [CheckedContinuation<Void, Never>] = []
        var waiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = NIOLockedValueBox(State())

    /// From now on calls wait in ``pass()``.
    func hold() { state.withLockedValue { $0.holding = true } }

    /// Lets every held call go; calls no longer wait.
    func release() {
        let held = state.withLockedValue { state in
            state.holding = false
            defer { state.held = [] }
            return state.held
        }
        for call in held { call.resume() }
    }

    /// Returns once `count` calls are held.
    func waitUntilHeld(_ count: Int = 1) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLockedValue { state -> Bool in
                if state.held.count >= count { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Where a call waits while the gate holds.
    func pass() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let (go, ready) = state.withLockedValue { state -> (Bool, [CheckedContinuation<Void, Never>]) in
                guard state.holding else { return (true, []) }
                state.held.append(continuation)
                let count = state.held.count
                let ready = state.waiters.filter { $0.count <= count }.map(\.continuation)
                state.waiters.removeAll { $0.count <= count }
                return (false, ready)
            }
            if go { continuation.resume() }
            for waiter in ready { waiter.resume() }
        }
    }
}
