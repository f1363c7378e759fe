import Core

/// A wait that took longer than its bound.
public struct TimedOut: Error, CustomStringConvertible {
    public var what: String
    public var limit: Duration
    public var description: String { "timed out after \(limit) waiting for \(what)" }
}

/// Runs `operation`, failing with ``TimedOut`` if it has not finished
/// within `limit` (it is then cancelled). Tests wait on events this way
/// instead of sleeping.
public func withTimeout<T: Sendable>(
    _ limit: Duration = .seconds(10),
    _ what: String = "the operation",
    _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    let outcome = await firstWithin(limit) { () async -> Result<T, any Error> in
        do {
            return .success(try await operation())
        } catch {
            return .failure(error)
        }
    }
    guard let outcome else { throw TimedOut(what: what, limit: limit) }
    return try outcome.get()
}

/// Returns when the calling task is cancelled: a handler that "hangs".
public func waitUntilCancelled() async {
    let (never, continuation) = AsyncStream.makeStream(of: Void.self)
    for await _ in never {}  // ends only when the task is cancelled
    continuation.finish()
}

/// A one-shot event a test can wait for, signalled from anywhere.
public final class TestEvent<Value: Sendable>: Sendable {
    private let stream: AsyncStream<Value>
    private let continuation: AsyncStream<Value>.Continuation

    public init() {
        (stream, continuation) = AsyncStream.makeStream(of: Value.self)
    }

    public func signal(_ value: Value) {
        continuation.yield(value)
    }

    /// The next signalled value, or ``TimedOut``.
    public func wait(_ limit: Duration = .seconds(10), _ what: String = "an event") async throws -> Value {
        let stream = self.stream
        return try await withTimeout(limit, what) {
            for await value in stream { return value }
            throw TimedOut(what: what, limit: limit)
        }
    }
}

extension TestEvent where Value == Void {
    public func signal() { signal(()) }
}
