internal import Core
internal import Synchronization

/// Wakes the poll loop before its deadline when a provider's shim serves
/// again, so that the machines waiting for it are polled at once instead of
/// at the next retry.
final class PollWakeup: Sendable {
    private struct State {
        /// Providers whose shim came back since the loop last looked.
        var providers: Set<String> = []
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    func signal(provider: String) {
        let waiter = state.withLock { state in
            state.providers.insert(provider)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// The providers signalled since the last call.
    func take() -> Set<String> {
        state.withLock { state in
            defer { state.providers = [] }
            return state.providers
        }
    }

    /// Returns at `deadline` on `clock`, or earlier when a provider is
    /// signalled (at once if one already was). Throws CancellationError
    /// when the task is cancelled.
    func wait(until deadline: Timestamp, on clock: any PollClock) async throws {
        if state.withLock({ !$0.providers.isEmpty }) { return }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await clock.sleep(until: deadline) }
            group.addTask { await self.signalled() }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    private func signalled() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if !state.providers.isEmpty || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
