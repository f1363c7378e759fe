internal import NIOConcurrencyHelpers

/// The pairs this controller holds leases on, as the ``LeaseManager``
/// last found them, for the poll engine to read without waiting
/// (docs/DESIGN.md §8). The engine polls only these pairs and writes each
/// batch's results with the pair's fence.
///
/// A fence is handed out only until this process's own monotonic clock
/// says the lease may have expired: the time the claim or renewal was
/// sent, plus the TTL, less a margin. A controller that was paused (SIGSTOP,
/// a long GC-like stall, a VM freeze) thus makes no call for a pair once
/// it wakes up past its lease, before the manager has even asked the
/// database; fencing refuses any write that was already under way.
public final class PairOwnership: Sendable {
    private struct Held {
        var fence: LeaseFence
        /// Until when, on this process's monotonic clock, the lease is
        /// surely still ours.
        var deadline: ContinuousClock.Instant
    }

    private struct State {
        var held: [CredentialKey: Held] = [:]
        /// Pairs with a batch in flight (calls or write).
        var busy: Set<CredentialKey> = []
        var handlers: [@Sendable () -> Void] = []
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// The fence of a held pair whose lease is surely still ours; nil
    /// when this controller does not hold it, or may not any more.
    public func fence(for key: CredentialKey) -> LeaseFence? {
        let now = ContinuousClock.now
        return state.withLockedValue { state in
            guard let held = state.held[key], now < held.deadline else { return nil }
            return held.fence
        }
    }

    /// The pairs held now (some may be past their local deadline until the
    /// manager renews them).
    public var held: Set<CredentialKey> {
        state.withLockedValue { Set($0.held.keys) }
    }

    /// Every fence held now.
    public var fences: [LeaseFence] {
        state.withLockedValue { $0.held.values.map(\.fence) }
    }

    /// Called after every change of the held set (the poller, the shims).
    public func whenChanged(_ handler: @escaping @Sendable () -> Void) {
        state.withLockedValue { $0.handlers.append(handler) }
    }

    /// Replaces what is held: each fence with the deadline of the claim or
    /// renewal that got it. Tells the handlers when the set changed.
    func set(_ fences: [(LeaseFence, ContinuousClock.Instant)]) {
        let now = ContinuousClock.now
        let handlers = state.withLockedValue { state -> [@Sendable () -> Void] in
            let before = state.held.mapValues(\.fence)
            // Renewed after a lapse (the database was out of reach): the
            // engine may poll again, which is news to it too.
            let lapsed = state.held.values.contains { $0.deadline <= now }
            state.held = Dictionary(fences.map { ($0.0.key, Held(fence: $0.0, deadline: $0.1)) }, uniquingKeysWith: { $1 })
            return before == state.held.mapValues(\.fence) && !lapsed ? [] : state.handlers
        }
        for handler in handlers { handler() }
    }

    /// A write found the pair's lease gone (fencing): it is no longer held,
    /// whatever the manager last saw.
    func lost(_ fence: LeaseFence) {
        let handlers = state.withLockedValue { state -> [@Sendable () -> Void] in
            guard state.held[fence.key]?.fence == fence else { return [] }
            state.held.removeValue(forKey: fence.key)
            return state.handlers
        }
        for handler in handlers { handler() }
    }

    // MARK: Batches in flight

    /// The engine starts a batch of `key`'s pair.
    func begin(_ key: CredentialKey) {
        state.withLockedValue { _ = $0.busy.insert(key) }
    }

    /// The engine's batch of `key`'s pair ended.
    func end(_ key: CredentialKey) {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.busy.remove(key)
            defer { state.idleWaiters = [] }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Whether a batch of `key`'s pair is in flight.
    func isBusy(_ key: CredentialKey) -> Bool {
        state.withLockedValue { $0.busy.contains(key) }
    }

    /// Returns once none of `keys` has a batch in flight, or at `timeout`:
    /// a lease is handed back only once its calls are over, so that two
    /// controllers never have calls of one pair in flight at once.
    func waitIdle(_ keys: Set<CredentialKey>, timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if state.withLockedValue({ $0.busy.isDisjoint(with: keys) }) { return }
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await withCheckedContinuation { continuation in
                        let now = self.state.withLockedValue { state -> Bool in
                            if state.busy.isDisjoint(with: keys) { return true }
                            state.idleWaiters.append(continuation)
                            return false
                        }
                        if now { continuation.resume() }
                    }
                }
                group.addTask { try? await Task.sleep(until: deadline) }
                await group.next()
                group.cancelAll()
                // The waiter may still be queued: wake it so the group ends.
                let left = self.state.withLockedValue { state in
                    defer { state.idleWaiters = [] }
                    return state.idleWaiters
                }
                for waiter in left { waiter.resume() }
            }
        }
    }
}
