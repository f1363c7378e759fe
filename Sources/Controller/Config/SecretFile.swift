internal import Core
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A file that holds secrets (credential attributes): only its owner may
/// read it, and its owner is the user reading it. The config's credential
/// files and `instancepoller credentials set --file` both go through here.
public enum SecretFile {
    public struct Refused: Error, Hashable, Sendable, CustomStringConvertible {
        public var path: String
        public var problem: String
        public var description: String { problem }
    }

    /// What is wrong with a secret file of this owner and mode, or nil:
    /// group or others may read or write it, or it belongs to another uid
    /// than `reader` (root reads only root's files too).
    public static func problem(path: String, owner: UInt32, mode: UInt32, reader: UInt32? = nil) -> String? {
        let reader = reader ?? getuid()
        let permissions = mode & 0o777
        if permissions & 0o077 != 0 {
            return "\(path) is readable by others (mode \(String(permissions, radix: 8))); chmod 600 it"
        }
        if owner != reader {
            return "\(path) belongs to uid \(owner), not to this user (uid \(reader)); mode \(String(permissions, radix: 8))"
        }
        return nil
    }

    /// Opens `path`, checks the opened file's owner and mode with
    /// ``problem(path:owner:mode:reader:)`` and reads it whole. Errors name
    /// the path, never its content.
    ///
    /// - Parameter regularFileOnly: refuse a FIFO, a device or `/dev/stdin`
    ///   (which could block or never end) without waiting on it, as the
    ///   controller does for its config's files; the CLI also takes a pipe
    ///   (`--file <(…)`).
    public static func contents(of path: String, regularFileOnly: Bool = false) throws(Refused) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | (regularFileOnly ? O_NONBLOCK : 0))
        guard fd >= 0 else { throw Refused(path: path, problem: "cannot read \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw Refused(path: path, problem: "cannot stat \(path): \(String(cString: strerror(errno)))")
        }
        if let refusal = problem(path: path, owner: info.st_uid, mode: UInt32(info.st_mode)) {
            throw Refused(path: path, problem: refusal)
        }
        guard info.st_mode & S_IFMT != S_IFDIR else { throw Refused(path: path, problem: "\(path) is a directory") }
        if regularFileOnly, info.st_mode & S_IFMT != S_IFREG {
            throw Refused(path: path, problem: "\(path): not a regular file")
        }
        var content: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw Refused(path: path, problem: "cannot read \(path): \(String(cString: strerror(errno)))") }
            if count == 0 { break }
            content += buffer[0..<count]
            guard content.count <= 1 << 20 else { throw Refused(path: path, problem: "\(path) is over 1 MiB; a credential file is a few lines") }
        }
        return content
    }
}
