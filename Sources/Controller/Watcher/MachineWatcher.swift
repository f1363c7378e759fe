internal import Core
internal import NIOConcurrencyHelpers

/// The store's events log as batches of events, in revision order.
///
/// It reads the log every `interval` (on the injected clock), so that
/// changes another process wrote to the same database are seen, and at once
/// when ``nudge()`` says this process just changed something (wire it with
/// `SQLiteMachineStore.setChangeHandler`).
///
/// ```swift
/// let watcher = MachineWatcher(store: store, clock: clock)
/// store.setChangeHandler { [weak watcher] in watcher?.nudge() }
/// for try await batch in watcher.batches(after: try await store.latestRevision()) { … }
/// ```
///
/// The sequence is pulled: nothing runs between calls to `next()`, and a
/// slow consumer just reads bigger batches later. Cancelling the consuming
/// task ends it (`next()` returns nil); a store failure is thrown.
public final class MachineWatcher: Sendable {
    public static let defaultInterval: Duration = .milliseconds(250)

    private let store: any MachineStore
    private let clock: any PollClock
    private let interval: Duration
    private let batchLimit: Int
    private let nudges = NIOLockedValueBox(Nudges())

    /// Nudges are counted, so that one that comes while the log is being
    /// read is not lost: the reader then does not sleep.
    private struct Nudges {
        var count: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        var nextWaiter: UInt64 = 0
    }

    /// - Parameters:
    ///   - interval: How often to look for changes made by other processes.
    ///   - batchLimit: The most events one batch holds.
    public init(store: any MachineStore, clock: any PollClock, interval: Duration = defaultInterval, batchLimit: Int = 1000) {
        self.store = store
        self.clock = clock
        self.interval = interval
        self.batchLimit = max(1, batchLimit)
    }

    /// Makes every waiting reader look at the log now instead of at its
    /// next interval.
    public func nudge() {
        let waiters = nudges.withLockedValue { nudges in
            nudges.count &+= 1
            defer { nudges.waiters = [:] }
            return Array(nudges.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// The events after `revision`, in batches.
    public func batches(after revision: Int64) -> Batches {
        Batches(watcher: self, start: revision)
    }

    public struct Batches: AsyncSequence, Sendable {
        public typealias Element = [MachineEvent]
        public typealias Failure = any Error

        let watcher: MachineWatcher
        let start: Int64

        public func makeAsyncIterator() -> Iterator {
            Iterator(watcher: watcher, revision: start)
        }

        public struct Iterator: AsyncIteratorProtocol {
            public typealias Element = [MachineEvent]
            public typealias Failure = any Error

            let watcher: MachineWatcher
            /// The last revision delivered.
            var revision: Int64

            /// The next non-empty batch; nil once the task is cancelled.
            public mutating func next() async throws -> [MachineEvent]? {
                while !Task.isCancelled {
                    let seen = watcher.nudgeCount
                    let events: [MachineEvent]
                    do {
                        events = try await watcher.store.events(after: revision, limit: watcher.batchLimit)
                    } catch is CancellationError {
                        return nil
                    }
                    if let last = events.last {
                        revision = last.revision
                        return events
                    }
                    do {
                        try await watcher.waitForNextLook(nudgedSince: seen)
                    } catch is CancellationError {
                        return nil
                    }
                }
                return nil
            }
        }
    }

    private var nudgeCount: UInt64 { nudges.withLockedValue { $0.count } }

    /// Returns after one interval, or at once if nudged since `seen`.
    private func waitForNextLook(nudgedSince seen: UInt64) async throws {
        let deadline = clock.now + interval
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.clock.sleep(until: deadline) }
            group.addTask { try await self.waitForNudge(after: seen) }
            defer { group.cancelAll() }
            try await group.next()
        }
        try Task.checkCancellation()
    }

    private func waitForNudge(after seen: UInt64) async throws {
        let id = nudges.withLockedValue { nudges in
            defer { nudges.nextWaiter &+= 1 }
            return nudges.nextWaiter
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome: Result<Void, any Error>? = nudges.withLockedValue { nudges in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if nudges.count != seen { return .success(()) }
                    nudges.waiters[id] = continuation
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let waiter = nudges.withLockedValue { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(throwing: CancellationError())
        }
    }
}
