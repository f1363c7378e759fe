/// A wait that took longer than its bound.
public struct TimedOut: Error, CustomStringConvertible {
    public var what: String
    public var limit: Duration
    public var description: String { "timed out after \(limit) waiting for \(what)" }
}

/// Runs `operation`, failing with ``TimedOut`` if it has not finished
/// within `limit`. Tests wait on events this way instead of sleeping.
public func withTimeout<T: Sendable>(
    _ limit: Duration = .seconds(10),
    _ what: String = "the operation",
    _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TimedOut(what: what, limit: limit)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
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
