import Core
import Support

/// Runs blocking work (a flood of connects, a wait on descriptors, a send
/// that waits for the peer) on a thread of its own. On one of Swift's
/// cooperative threads it would hold up every other test's tasks: a 2-core
/// machine has two of them. `body` must not use `#expect` (the test's
/// context stays with the caller): return what to check.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DetachedThread.run { continuation.resume(with: Result { try body() }) }
    }
}

/// ``onOwnThread(_:)`` for work that cannot fail.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DetachedThread.run { continuation.resume(returning: body()) }
    }
}
