internal import Core
#if canImport(Glibc)
internal import Glibc
#endif

/// Where a shim that runs as another user listens: `<runtime>/shims/<provider>/`,
/// a 0700 directory owned by the shim's user, inside a root-owned 0711
/// `shims` directory. The runtime directory becomes 0711 (others may pass
/// through, not list or change it), so the shim can reach its own
/// directory and nothing else: every other socket there is 0600 and its
/// owner's.
///
/// Everything is created and changed relative to descriptors opened with
/// O_NOFOLLOW, so a symlink planted anywhere on the way is refused, never
/// followed.
enum ShimDirectory {
    static let parentName = "shims"

    /// Creates (or takes back) the provider's directory for `user`; returns its path.
    static func prepare(runtimeDirectory: String, provider: String, user: ShimUser) throws(UnixSocket.PathError) -> String {
        let runtime = try openOwn(AT_FDCWD, runtimeDirectory, shown: runtimeDirectory, mode: 0o711)
        defer { close(runtime) }

        let parentPath = "\(runtimeDirectory)/\(parentName)"
        try makeDirectory(runtime, parentName, mode: 0o711, shown: parentPath)
        let parent = try openOwn(runtime, parentName, shown: parentPath, mode: 0o711)
        defer { close(parent) }

        let path = "\(parentPath)/\(provider)"
        try makeDirectory(parent, provider, mode: 0o700, shown: path)
        let directory = try openDirectory(parent, provider, shown: path)
        defer { close(directory) }
        guard fchown(directory, user.uid, user.gid) == 0 else {
            throw UnixSocket.PathError(path: path, problem: "cannot give the directory to \(user) gid \(user.gid): \(errnoText())")
        }
        try PrivatePath.setMode(directory, path, 0o700)
        return path
    }

    /// Opens a directory of ours and gives it `mode`.
    private static func openOwn(_ at: Int32, _ name: String, shown: String, mode: mode_t) throws(UnixSocket.PathError) -> Int32 {
        let fd = try openDirectory(at, name, shown: shown)
        do throws(UnixSocket.PathError) {
            // Ours, and nobody else may list or change it (search is fine).
            try PrivatePath.checkOwnDirectory(fd, shown, justCreated: false, allowSearch: true)
            try PrivatePath.setMode(fd, shown, mode)
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    private static func openDirectory(_ at: Int32, _ name: String, shown: String) throws(UnixSocket.PathError) -> Int32 {
        let fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            let problem = errno == ELOOP || errno == ENOTDIR ? "is not a directory (a symlink is refused)" : "cannot open: \(errnoText())"
            throw UnixSocket.PathError(path: shown, problem: problem)
        }
        return fd
    }

    private static func makeDirectory(_ at: Int32, _ name: String, mode: mode_t, shown: String) throws(UnixSocket.PathError) {
        guard mkdirat(at, name, mode) == 0 || errno == EEXIST else {
            throw UnixSocket.PathError(path: shown, problem: "cannot create directory: \(errnoText())")
        }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}
