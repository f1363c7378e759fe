internal import NIOConcurrencyHelpers

/// Runs `operation` and returns its result, or nil when `limit` passes
/// first (the operation is then cancelled).
///
/// Unstructured on purpose: a task group would wait for an operation that
/// cannot be cancelled (waiting for a process, a channel on a blocked event
/// loop); here the caller goes on at the deadline regardless.
public func firstWithin<T: Sendable>(_ limit: Duration, _ operation: @escaping @Sendable () async -> T) async -> T? {
    let decided = NIOLockedValueBox(false)
    let tasks = NIOLockedValueBox<[Task<Void, Never>]>([])
    return await withTaskCancellationHandler {
        await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            let finish: @Sendable (T?) -> Void = { value in
                let first = decided.withLockedValue { done in defer { done = true }; return !done }
                guard first else { return }
                for task in tasks.withLockedValue({ $0 }) { task.cancel() }
                continuation.resume(returning: value)
            }
            let work = Task { finish(await operation()) }
            let timer = Task {
                try? await Task.sleep(for: limit)
                finish(nil)
            }
            tasks.withLockedValue { $0 = [work, timer] }
            // Decided already, or the caller was cancelled before the tasks
            // existed (the cancellation handler then had nothing to cancel).
            if decided.withLockedValue({ $0 }) || Task.isCancelled {
                work.cancel()
                timer.cancel()
            }
        }
    } onCancel: {
        for task in tasks.withLockedValue({ $0 }) { task.cancel() }
    }
}
