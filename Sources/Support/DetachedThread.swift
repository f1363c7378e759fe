#if canImport(Glibc)
import Glibc
#endif

/// A plain OS thread for a blocking loop (reading a pipe, waiting for a
/// child): it must not occupy one of Swift's cooperative threads.
public enum DetachedThread {
    /// Runs `body` on a new detached thread.
    public static func run(_ body: @escaping @Sendable () -> Void) {
        final class Box: Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        let box = Unmanaged.passRetained(Box(body))
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box.toOpaque())
        if created == 0 {
            pthread_detach(thread)
        } else {
            // No thread: run it here rather than lose it.
            box.takeRetainedValue().body()
        }
    }
}
