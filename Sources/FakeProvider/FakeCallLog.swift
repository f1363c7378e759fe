#if canImport(Glibc)
internal import Glibc
#endif

/// `provider-shim fake --call-log FILE`: one line per start and end of each
/// cloud call, appended to a file that several shim processes may share, so
/// that a test can check across controllers that no pair ever had two
/// calls in flight at once and no batch was polled twice at the same time.
///
/// A line: `<CLOCK_MONOTONIC ns> <pid> start|end <method> <credential> <count> <id,id,…>`.
/// Each line is one `write` to a file opened `O_APPEND`, so lines of
/// several processes never interleave. The monotonic clock is the same for
/// every process of the machine.
public final class FakeCallLog: Sendable {
    private let descriptor: Int32

    /// Opens (creating, 0600) `path` for appending.
    public init(path: String) throws(FakeCallLogError) {
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else { throw FakeCallLogError(description: "cannot open call log \(path): \(String(cString: strerror(errno)))") }
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    public func record(_ phase: String, method: String, credential: String, ids: [String]) {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let nanoseconds = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
        let line = "\(nanoseconds) \(getpid()) \(phase) \(method) \(credential.isEmpty ? "-" : credential) \(ids.count) \(ids.joined(separator: ","))\n"
        var bytes = Array(line.utf8)
        _ = bytes.withUnsafeMutableBytes { write(descriptor, $0.baseAddress, $0.count) }
    }
}

public struct FakeCallLogError: Error, CustomStringConvertible {
    public var description: String
}
