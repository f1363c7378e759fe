internal import Core
internal import NIOConcurrencyHelpers

/// Wakes the poll loop before its deadline: when a provider's shim serves
/// again, so that the machines waiting for it are polled at once instead of
/// at the next retry, and when this process changed the store, so that the
/// change is read at once instead of at the next events read.
final class PollWakeup: Sendable {
    private struct State {
        /// Providers whose shim came back since the loop last looked.
        var providers: Set<String> = []
        /// Providers whose shim was swapped since the loop last looked.
        var swapped: Set<String> = []
        /// The store changed since the loop last looked.
        var storeChanged = false
        var waiter: CheckedContinuation<Void, Never>?

        var pending: Bool { !providers.isEmpty || !swapped.isEmpty || storeChanged }
    }

    private let state = NIOLockedValueBox(State())

    func signal(provider: String) {
        let waiter = state.withLockedValue { state in
            state.providers.insert(provider)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    func swapped(provider: String) {
        let waiter = state.withLockedValue { state in
            state.swapped.insert(provider)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    func storeChanged() {
        let waiter = state.withLockedValue { state in
            state.storeChanged = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// The providers whose shim came back and those whose shim was
    /// swapped since the last call (and forgets that the store changed: the
    /// round about to run reads it).
    func take() -> (serving: Set<String>, swapped: Set<String>) {
        state.withLockedValue { state in
            defer {
                state.providers = []
                state.swapped = []
                state.storeChanged = false
            }
            return (state.providers, state.swapped)
        }
    }

    /// Returns at `deadline` on `clock`, or earlier when a provider or a
    /// store change is signalled (at once if one already was). Throws
    /// CancellationError when the task is cancelled.
    func wait(until deadline: Timestamp, on clock: any PollClock) async throws {
        if state.withLockedValue({ $0.pending }) { return }
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
                let now = state.withLockedValue { state -> Bool in
                    if state.pending || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
