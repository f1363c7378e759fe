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

    /// Creates `path` as a 0700 directory (parents as needed, 0700 too), or
    /// checks an existing one: it must be a directory owned by this user
    /// that group and others can neither list nor change (they may have
    /// search permission, which a controller gives its runtime directory
    /// when a shim runs as another user: see ``checkSocketDirectory(forSocket:owner:)``).
    public static func prepareDirectory(_ path: String) throws(PathError) {
        var info = stat()
        if lstat(path, &info) != 0 {
            guard errno == ENOENT else { throw PathError(path: path, problem: "cannot stat: \(errnoText())") }
            let parent = parentDirectory(of: path)
            if parent != path, !parent.isEmpty, access(parent, F_OK) != 0 {
                try prepareDirectory(parent)
            }
            if mkdir(path, 0o700) != 0, errno != EEXIST {
                throw PathError(path: path, problem: "cannot create directory: \(errnoText())")
            }
            guard chmod(path, 0o700) == 0 else {
                throw PathError(path: path, problem: "cannot set mode 0700: \(errnoText())")
            }
            return
        }
        try checkPrivateDirectory(path, info)
    }

    /// Checks that the directory that will hold a socket belongs to `owner`
    /// (by default this user) and that group and others can neither list it
    /// nor create, rename or remove entries in it (search permission alone
    /// is allowed), so nobody else can put their own socket in its place.
    public static func checkSocketDirectory(forSocket socketPath: String, owner: UInt32? = nil) throws(PathError) {
        let directory = parentDirectory(of: socketPath)
        var info = stat()
        guard lstat(directory, &info) == 0 else {
            throw PathError(path: directory, problem: "socket directory is missing: \(errnoText())")
        }
        try checkPrivateDirectory(directory, info, owner: owner ?? getuid())
    }

    private static func checkPrivateDirectory(_ path: String, _ info: stat, owner: UInt32 = getuid()) throws(PathError) {
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw PathError(path: path, problem: "exists and is not a directory")
        }
        guard info.st_uid == owner else {
            let expected = owner == getuid() ? "this user (uid \(owner))" : "uid \(owner)"
            throw PathError(path: path, problem: "directory is owned by uid \(info.st_uid), not by \(expected)")
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o066 == 0 else {
            throw PathError(
                path: path,
                problem: "directory has mode 0\(String(mode, radix: 8)); it must be private (chmod 700 \(path))"
            )
        }
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

    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}
