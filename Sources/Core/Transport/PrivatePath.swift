#if canImport(Glibc)
public import Glibc
#elseif canImport(Musl)
public import Musl
#endif

/// Directories and files that hold sockets or secrets, handled on
/// descriptors rather than paths, so that nobody else can slip a symbolic
/// link or a directory of their own in between a check and a use.
///
/// The rules: a private directory or file must be owned by this user and
/// give group and others no access; nothing is ever followed through a
/// symbolic link at the last component; a mode is only ever fixed with
/// `fchmod` on what was just created here; and the directory that holds one
/// must not let others rename it away (not writable by group or others,
/// unless it is sticky as /tmp is).
public enum PrivatePath {
    public typealias Problem = UnixSocket.PathError

    /// Opens the directory at `path`, creating it 0700 when it is missing
    /// (and its missing parents, 0700 too, when `createParents`). Returns an
    /// `O_DIRECTORY` descriptor the caller closes.
    ///
    /// A directory that already exists must be owned by this user and
    /// private; one that is someone else's is refused with a message saying
    /// whose it is. A symbolic link in its place is refused, never followed.
    ///
    /// `allowSearch`: an existing directory may also let group and others
    /// pass through it (search, `--x`), never list or change it.
    public static func openDirectory(_ path: String, createParents: Bool = true, allowSearch: Bool = false) throws(Problem) -> Int32 {
        try checkParent(of: path, createParents: createParents)
        var created = false
        // Bounded: each turn either opens, creates, or fails; a directory
        // that keeps vanishing between mkdir and open is an attack.
        for _ in 0..<8 {
            let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if descriptor >= 0 {
                do throws(Problem) {
                    try checkOwnDirectory(descriptor, path, justCreated: created, allowSearch: allowSearch)
                } catch {
                    close(descriptor)
                    throw error
                }
                return descriptor
            }
            let openErrno = errno
            switch openErrno {
            case ENOENT:
                if mkdir(path, 0o700) == 0 {
                    created = true
                } else if errno != EEXIST {
                    throw Problem(path: path, problem: "cannot create directory: \(errnoText())")
                }
            case ELOOP, ENOTDIR:
                throw Problem(path: path, problem: describeInTheWay(path))
            default:
                throw Problem(path: path, problem: "cannot open directory: \(String(cString: strerror(openErrno)))")
            }
        }
        throw Problem(path: path, problem: "keeps vanishing between creation and use; someone else is renaming it")
    }

    /// Checks an open directory: `owner`'s (by default this user's), and
    /// private (or only searchable by others, with `allowSearch`). A
    /// directory this process just created gets exactly 0700 (whatever the
    /// umask).
    public static func checkOwnDirectory(
        _ descriptor: Int32, _ path: String, justCreated: Bool, owner: uid_t = getuid(), allowSearch: Bool = false
    ) throws(Problem) {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw Problem(path: path, problem: "cannot stat: \(errnoText())")
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw Problem(path: path, problem: "exists and is not a directory")
        }
        guard info.st_uid == owner else {
            let expected = owner == getuid() ? "this user (uid \(owner))" : Self.owner(owner)
            throw Problem(path: path, problem: "directory belongs to \(Self.owner(info.st_uid)), not to \(expected); remove it, or choose another directory")
        }
        let mode = info.st_mode & 0o7777
        if justCreated, mode != 0o700 {
            try setMode(descriptor, path, 0o700)
            return
        }
        guard mode & (allowSearch ? 0o066 : 0o077) == 0 else {
            throw Problem(path: path, problem: "directory has mode \(octal(mode)); it must be private (chmod 700 \(path))")
        }
    }

    /// Sets the mode of an open file or directory (never by path).
    public static func setMode(_ descriptor: Int32, _ path: String, _ mode: mode_t) throws(Problem) {
        guard fchmod(descriptor, mode) == 0 else {
            throw Problem(path: path, problem: "cannot set mode \(octal(mode)): \(errnoText())")
        }
    }

    /// The parent of `path` must not let anyone but its owner (this user or
    /// root) rename entries away, unless it is sticky.
    static func checkParent(of path: String, createParents: Bool) throws(Problem) {
        let parent = UnixSocket.parentDirectory(of: path)
        guard parent != path, !parent.isEmpty else { return }
        var info = stat()
        if stat(parent, &info) != 0 {
            guard errno == ENOENT, createParents else {
                throw Problem(path: parent, problem: "cannot stat: \(errnoText())")
            }
            close(try openDirectory(parent, createParents: true))
            return
        }
        try checkNoForeignWriters(directory: parent, info)
    }

    /// A directory that holds something of ours: owned by us or root, and
    /// not writable by group or others unless sticky (where nobody can
    /// rename or remove another's entries).
    public static func checkNoForeignWriters(directory path: String, _ info: stat) throws(Problem) {
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw Problem(path: path, problem: "is not a directory")
        }
        guard info.st_uid == getuid() || info.st_uid == 0 else {
            throw Problem(path: path, problem: "directory belongs to \(owner(info.st_uid)); it must be this user's or root's")
        }
        let mode = info.st_mode & 0o7777
        if mode & 0o022 != 0, mode & S_ISVTX == 0 {
            throw Problem(path: path, problem: "directory has mode \(octal(mode)): others can rename what it holds; chmod go-w it, or use a private directory")
        }
    }

    /// Opens a regular file that holds secrets: `O_NOFOLLOW`, owned by this
    /// user, group and others without access. `create`: a missing file is
    /// created 0600 (exactly, whatever the umask). Returns the descriptor and
    /// whether it was created here.
    public static func openPrivateFile(_ path: String, create: Bool) throws(Problem) -> (descriptor: Int32, created: Bool) {
        var created = false
        var descriptor: Int32 = -1
        if create {
            descriptor = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            created = descriptor >= 0
            if descriptor < 0, errno != EEXIST {
                throw Problem(path: path, problem: "cannot create: \(errnoText())")
            }
        }
        if descriptor < 0 {
            descriptor = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
            guard descriptor >= 0 else {
                let openErrno = errno
                if openErrno == ELOOP { throw Problem(path: path, problem: describeInTheWay(path)) }
                throw Problem(path: path, problem: "cannot open: \(String(cString: strerror(openErrno)))")
            }
        }
        do throws(Problem) {
            if created { try setMode(descriptor, path, 0o600) }
            var info = stat()
            guard fstat(descriptor, &info) == 0 else {
                throw Problem(path: path, problem: "cannot stat: \(errnoText())")
            }
            try checkPrivateFile(path, info)
        } catch {
            close(descriptor)
            throw error
        }
        return (descriptor, created)
    }

    /// A regular file owned by this user that group and others cannot use.
    public static func checkPrivateFile(_ path: String, _ info: stat) throws(Problem) {
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw Problem(path: path, problem: "is not a regular file")
        }
        guard info.st_uid == getuid() else {
            throw Problem(path: path, problem: "belongs to \(owner(info.st_uid)), not to this user (uid \(getuid())); remove it")
        }
        let mode = info.st_mode & 0o7777
        guard mode & 0o077 == 0 else {
            throw Problem(path: path, problem: "has mode \(octal(mode)); group and others must have no access (chmod 600 \(path))")
        }
    }

    /// "uid 65534 (nobody)", or "uid 1234" for a uid with no name.
    public static func owner(_ uid: uid_t) -> String {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 1024)
        let found = getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0 && result != nil
        guard found, let name = entry.pw_name else { return "uid \(uid)" }
        return "uid \(uid) (\(String(cString: name)))"
    }

    /// "0644", "1777".
    public static func octal(_ mode: mode_t) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// What is at `path` instead of the directory or file wanted.
    static func describeInTheWay(_ path: String) -> String {
        var info = stat()
        guard lstat(path, &info) == 0 else { return "cannot be opened: \(errnoText())" }
        switch info.st_mode & S_IFMT {
        case S_IFLNK: return "is a symbolic link (owned by \(owner(info.st_uid))); refusing to follow it"
        case S_IFDIR: return "is a directory"
        default: return "exists and is not a directory"
        }
    }

    static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}
