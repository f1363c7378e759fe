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
/// It is opened as a descriptor and checked there (ours, private, not a
/// symbolic link); everything inside it is then reached relative to that
/// descriptor without following links, so a directory someone else slips
/// into its place can never make the controller touch their files.
///
/// Opening it takes an exclusive lock (`controller.lock`, holding the pid),
/// so two controllers never share one; the kernel drops the lock when the
/// process dies, even by kill -9. Then sockets left by a controller that
/// died are removed. ``close()`` removes every socket and the lock file.
public final class RuntimeDirectory: Sendable {
    public let path: String
    private let directoryDescriptor: Int32
    private let lockDescriptor: Int32
    private let logger: Logger

    public struct Unusable: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
    }

    public static let lockFileName = "controller.lock"

    /// - Throws: ``Unusable`` naming the directory and what is wrong (not
    ///   private, someone else's, or another controller holds it).
    public init(path: String, logger: Logger) throws(Unusable) {
        self.path = path
        self.logger = logger
        let directory: Int32
        do {
            directory = try PrivatePath.openDirectory(path, allowSearch: true)
        } catch {
            throw Unusable(description: "runtime directory \(error)")
        }
        do {
            // A previous run may have let others pass through (a shim ran
            // as another user): private again until a shim needs that.
            try PrivatePath.setMode(directory, path, 0o700)
        } catch {
            Glibc.close(directory)
            throw Unusable(description: "runtime directory \(error)")
        }
        let lock = openat(directory, Self.lockFileName, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard lock >= 0 else {
            let problem = errno == ELOOP ? "is a symbolic link; refusing to follow it" : "cannot be opened: \(String(cString: strerror(errno)))"
            Glibc.close(directory)
            throw Unusable(description: "runtime directory \(path): \(Self.lockFileName) \(problem)")
        }
        var info = stat()
        guard fstat(lock, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_uid == getuid() else {
            Glibc.close(lock)
            Glibc.close(directory)
            throw Unusable(description: "runtime directory \(path): \(Self.lockFileName) is not a regular file of this user's; remove it")
        }
        guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            let holder = Self.readPid(lock)
            Glibc.close(lock)
            Glibc.close(directory)
            let who = holder.map { "pid \($0)" } ?? "another process"
            throw Unusable(description: "runtime directory \(path) is in use by another controller (\(who)); stop it, or give this one its own runtime_directory")
        }
        // Only now, holding the lock, is the old pid replaced.
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(lock, 0)
        _ = pid.withUnsafeBytes { pwrite(lock, $0.baseAddress, $0.count, 0) }
        directoryDescriptor = directory
        lockDescriptor = lock
        for stale in sockets() {
            _ = unlinkat(directory, stale, 0)
            logger.notice("removed a stale socket", metadata: ["path": "\(path)/\(stale)"])
        }
    }

    /// Removes the sockets still here and the lock file, and releases the lock.
    public func close() {
        for socket in sockets() { _ = unlinkat(directoryDescriptor, socket, 0) }
        _ = unlinkat(directoryDescriptor, Self.lockFileName, 0)
        Glibc.close(lockDescriptor)
        Glibc.close(directoryDescriptor)
    }

    /// The names of the Unix sockets in the directory.
    func sockets() -> [String] {
        let listing = dup(directoryDescriptor)
        guard listing >= 0, let directory = fdopendir(listing) else { return [] }
        defer { closedir(directory) }
        rewinddir(directory)
        var found: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasSuffix(".sock") else { continue }
            var info = stat()
            if fstatat(directoryDescriptor, name, &info, AT_SYMLINK_NOFOLLOW) == 0, info.st_mode & S_IFMT == S_IFSOCK {
                found.append(name)
            }
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
