internal import Core
public import Logging
internal import Foundation
#if canImport(Glibc)
internal import Glibc
#endif

/// The controller's private runtime directory (0700): the shims' sockets and
/// the control socket live here. A shim that runs as another user
/// (`shim.user`) listens in `shims/<provider>/` here instead, and the
/// directory is then 0711 (see ``ShimDirectory``).
///
/// Opening it takes an exclusive lock (`controller.lock`, holding the pid),
/// so two controllers never share one; the kernel drops the lock when the
/// process dies, even by kill -9. Then sockets left by a controller that
/// died are removed. ``close()`` removes every socket and the lock file.
public final class RuntimeDirectory: Sendable {
    public let path: String
    private let lockDescriptor: Int32
    private let logger: Logger

    public struct Unusable: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
    }

    public static let lockFileName = "controller.lock"

    /// - Throws: ``Unusable`` naming the directory and what is wrong (not
    ///   private, or another controller holds it).
    public init(path: String, logger: Logger) throws(Unusable) {
        self.path = path
        self.logger = logger
        do {
            try UnixSocket.prepareDirectory(path)
        } catch {
            throw Unusable(description: "runtime directory \(error)")
        }
        // A previous run may have let others pass through (a shim ran as
        // another user): private again until a shim needs that.
        guard chmod(path, 0o700) == 0 else {
            throw Unusable(description: "runtime directory \(path): cannot set mode 0700: \(String(cString: strerror(errno)))")
        }
        let lockPath = "\(path)/\(Self.lockFileName)"
        let descriptor = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw Unusable(description: "runtime directory \(path): cannot open \(Self.lockFileName): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = Self.readPid(descriptor)
            Glibc.close(descriptor)
            let who = holder.map { "pid \($0)" } ?? "another process"
            throw Unusable(description: "runtime directory \(path) is in use by another controller (\(who)); stop it, or give this one its own runtime_directory")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pid.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
        lockDescriptor = descriptor
        for stale in sockets() {
            UnixSocket.remove(stale)
            logger.notice("removed a stale socket", metadata: ["path": "\(stale)"])
        }
    }

    /// Removes the sockets still here and the lock file, and releases the lock.
    public func close() {
        for socket in sockets() { UnixSocket.remove(socket) }
        unlink("\(path)/\(Self.lockFileName)")
        Glibc.close(lockDescriptor)
    }

    /// The Unix sockets in the directory.
    func sockets() -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var found: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasSuffix(".sock") else { continue }
            var info = stat()
            let full = "\(path)/\(name)"
            if lstat(full, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK { found.append(full) }
        }
        return found.sorted()
    }

    private static func readPid(_ descriptor: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        return Int32(String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
