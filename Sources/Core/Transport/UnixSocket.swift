#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// File-system side of the Unix sockets: the private directory they live in,
/// their mode, and stale files left by a process that died.
public enum UnixSocket {
    /// `sun_path` holds 108 bytes including the terminating NUL.
    public static let maxPathBytes = 107

    /// A socket path or its directory that cannot be used; the message names
    /// the path and what is wrong.
    public struct PathError: Error, Hashable, Sendable, CustomStringConvertible {
        public var path: String
        public var problem: String
        public var description: String { "\(path): \(problem)" }

        public init(path: String, problem: String) {
            self.path = path
            self.problem = problem
        }
    }

    /// Checks that the directory that will hold a socket belongs to `owner`
    /// (by default this user) and that group and others can neither list it
    /// nor create, rename or remove entries in it (search permission alone
    /// is allowed: a controller gives it to its runtime directory when a shim
    /// runs as another user), so nobody else can put their own socket in its
    /// place. The directory is opened without following a link and checked
    /// on its descriptor.
    public static func checkSocketDirectory(forSocket socketPath: String, owner: UInt32? = nil) throws(PathError) {
        let directory = parentDirectory(of: socketPath)
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ELOOP || errno == ENOTDIR {
                throw PathError(path: directory, problem: PrivatePath.describeInTheWay(directory))
            }
            throw PathError(path: directory, problem: "socket directory is missing: \(errnoText())")
        }
        defer { close(descriptor) }
        try PrivatePath.checkOwnDirectory(descriptor, directory, justCreated: false, owner: owner ?? getuid(), allowSearch: true)
    }

    /// Removes a socket file left by a process that died; refuses to remove
    /// anything that is not a socket.
    public static func removeStale(_ path: String) throws(PathError) {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw PathError(path: path, problem: "cannot stat: \(errnoText())")
        }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw PathError(path: path, problem: "exists and is not a socket; refusing to remove it")
        }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw PathError(path: path, problem: "cannot remove stale socket: \(errnoText())")
        }
    }

    /// Checks the path fits in `sun_path`.
    public static func checkPathLength(_ path: String) throws(PathError) {
        let bytes = path.utf8.count
        guard bytes <= maxPathBytes else {
            throw PathError(
                path: path,
                problem: "socket path is \(bytes) bytes; Unix sockets allow at most \(maxPathBytes)"
            )
        }
    }

    /// Sets the socket file's mode to 0600.
    public static func restrictMode(_ path: String) throws(PathError) {
        guard chmod(path, 0o600) == 0 else {
            throw PathError(path: path, problem: "cannot set socket mode 0600: \(errnoText())")
        }
    }

    /// Removes the socket file if it is still there (on shutdown).
    public static func remove(_ path: String) {
        try? removeStale(path)
    }

    /// The directory part of `path`: "/" for "/x", "." for "x".
    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}
