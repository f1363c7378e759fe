internal import Core
internal import NIOConcurrencyHelpers

/// Wakes the control API's `Events` long polls from one ``MachineWatcher``:
/// however many calls wait, the store's log is read once per interval (and
/// at once on ``nudge()``), and each waiting call is woken when the log
/// moves past the revision it waits after.
///
/// The watcher runs only while some call waits. Wire ``nudge()`` to
/// `SQLiteMachineStore.setChangeHandler` so that this process's own
/// changes wake the calls at once.
public final class EventsFeed: Sendable {
    private let store: any MachineStore
    private let watcher: MachineWatcher
    private let state = NIOLockedValueBox(State())

    private struct Waiter {
        var after: Int64
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        /// The latest revision the running watcher has seen; nil while it
        /// has not looked yet.
        var seen: Int64?
        var waiters: [UInt64: Waiter] = [:]
        var nextID: UInt64 = 0
        var reader: Task<Void, Never>?
        /// Bumped each time a reader starts, so that a stopping one does not
        /// clear its successor.
        var generation: UInt64 = 0
    }

    public init(store: any MachineStore, clock: any PollClock, interval: Duration = .milliseconds(100)) {
        self.store = store
        self.watcher = MachineWatcher(store: store, clock: clock, interval: interval)
    }

    /// Looks at the log now (this process just changed it).
    public func nudge() {
        watcher.nudge()
    }

    /// Calls waiting now.
    public var waiting: Int { state.withLockedValue { $0.waiters.count } }

    /// Returns once the log holds a revision after `revision`, or when the
    /// calling task is cancelled (bound it with `firstWithin`).
    public func wait(after revision: Int64) async {
        let id = state.withLockedValue { state in
            defer { state.nextID &+= 1 }
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLockedValue { state -> Bool in
                    if Task.isCancelled { return true }
                    if let seen = state.seen, seen > revision { return true }
                    state.waiters[id] = Waiter(after: revision, continuation: continuation)
                    if state.reader == nil { startReader(&state) }
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state in
                let waiter = state.waiters.removeValue(forKey: id)
                if state.waiters.isEmpty { stopReader(&state) }
                return waiter
            }
            waiter?.continuation.resume()
        }
    }

    private func startReader(_ state: inout State) {
        state.generation &+= 1
        let generation = state.generation
        state.reader = Task { [self] in
            do {
                // Start from the log's end: a caller waits only after it
                // found nothing past its revision.
                let start = try await store.latestRevision()
                deliver(start, generation: generation)
                for try await batch in watcher.batches(after: start) {
                    guard let last = batch.last else { continue }
                    deliver(last.revision, generation: generation)
                }
            } catch {
                // A failing store: wake everyone; each call reads the store
                // itself and reports the failure.
                release(generation: generation)
            }
        }
    }

    private func stopReader(_ state: inout State) {
        state.reader?.cancel()
        state.reader = nil
        state.seen = nil
    }

    /// The log reached `revision`: wakes the calls waiting for less.
    private func deliver(_ revision: Int64, generation: UInt64) {
        let ready = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            guard state.generation == generation, state.reader != nil else { return [] }
            state.seen = max(state.seen ?? revision, revision)
            let woken = state.waiters.filter { $0.value.after < revision }
            for id in woken.keys { state.waiters.removeValue(forKey: id) }
            if state.waiters.isEmpty { stopReader(&state) }
            return woken.values.map(\.continuation)
        }
        for continuation in ready { continuation.resume() }
    }

    private func release(generation: UInt64) {
        let all = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            guard state.generation == generation else { return [] }
            defer {
                state.waiters = [:]
                stopReader(&state)
            }
            return state.waiters.values.map(\.continuation)
        }
        for continuation in all { continuation.resume() }
    }
}
