public import NIOCore

/// Runs Swift tasks on a NIO event loop.
///
/// A task that prefers this executor (`withTaskExecutorPreference`, or
/// `Task(executorPreference:)`) writes to the loop's channels and resumes
/// from their replies on the same thread: a call costs no thread hop. The
/// server runs handlers this way by default; a latency-sensitive client can
/// run its callers this way with ``RPCClient/executor``. Work that blocks
/// must not run here: it would stall every connection on the loop.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
