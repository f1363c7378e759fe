internal import CSystemShims
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Keeps secrets out of core files and away from other processes of the
/// same uid: every process that holds a secret (the controller, every shim,
/// the CLI commands that read secret files) calls ``forbidDumpsAndTracing()``
/// first.
public enum ProcessHardening {
    public struct Failure: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// `setrlimit(RLIMIT_CORE, 0)` and `prctl(PR_SET_DUMPABLE, 0)`: no core
    /// file, and no ptrace attach or reading `/proc/<pid>/mem` or `environ`
    /// by another process of the same uid (only a process with
    /// CAP_SYS_PTRACE still can). A no-op off Linux.
    public static func forbidDumpsAndTracing() throws(Failure) {
        #if os(Linux)
        let result = ip_forbid_dumps_and_tracing()
        guard result == 0 else {
            throw Failure(description: "cannot forbid core dumps and tracing: \(String(cString: strerror(-result)))")
        }
        #endif
    }
}
