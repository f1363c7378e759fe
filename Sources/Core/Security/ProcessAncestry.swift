#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Who descends from whom, read from `/proc/<pid>/stat`.
public enum ProcessAncestry {
    /// How many parents are followed at most.
    public static let maximumDepth = 64

    /// The parent of `pid`, or nil if it is gone or unreadable.
    public static func parent(of pid: Int32) -> Int32? {
        guard let bytes = readProcFile(pid, "stat", upTo: 1024) else { return nil }
        // "pid (comm) state ppid …": comm may hold spaces and parentheses,
        // so the fields start after the last ')'.
        guard let close = bytes.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 1 else { return nil }
        return Int32(String(decoding: fields[1], as: UTF8.self))
    }

    /// The first `limit` bytes of `/proc/<pid>/<name>`; nil when the
    /// process is gone or the file cannot be read.
    static func readProcFile(_ pid: Int32, _ name: String, upTo limit: Int) -> ArraySlice<UInt8>? {
        let fd = open("/proc/\(pid)/\(name)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: limit)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return buffer[0..<count]
    }

    /// Whether `pid` is `ancestor` or descends from it, following at most
    /// ``maximumDepth`` parents.
    public static func isSelfOrDescendant(_ pid: Int32, of ancestor: Int32) -> Bool {
        guard ancestor > 1 else { return false }
        var current = pid
        for _ in 0...maximumDepth {
            if current == ancestor { return true }
            guard current > 1, let next = parent(of: current), next != current else { return false }
            current = next
        }
        return false
    }
}
