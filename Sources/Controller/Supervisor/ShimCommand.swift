internal import Core
internal import Foundation
#if canImport(Glibc)
internal import Glibc
#endif

/// How to start a provider's shim: `executable arguments…` with exactly
/// this environment (the provider's allowlist, resolved) plus
/// `INSTANCEPOLLER_SOCKET`. Nothing else of the controller's environment is
/// passed on, and secrets never travel here: they go over the socket.
public struct ShimCommand: Hashable, Sendable {
    public var executable: String
    public var arguments: [String]
    public var environment: [String: String]
    /// The user the shim runs as (`shim.user`); nil: the controller's.
    public var user: ShimUser?
    /// The absolute directory the shim runs in, where its relative
    /// arguments (e.g. a scenario file) are found: the config file's
    /// directory for a configured shim, the CLI's for one swapped in by
    /// `providers swap`. nil: the controller's working directory.
    public var workingDirectory: String?

    public init(
        executable: String, arguments: [String] = [], environment: [String: String] = [:], user: ShimUser? = nil,
        workingDirectory: String? = nil
    ) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.user = user
        self.workingDirectory = workingDirectory
    }

    /// Whether starting it drops privileges: the controller is root and the
    /// config names a user for it.
    public var dropsPrivileges: Bool { user != nil && getuid() == 0 }

    /// Finds a shim executable: `name` with a slash is a path (relative to
    /// `base`); a bare name is looked for next to the running program, then
    /// on `PATH`. Returns the absolute path, or nil and where it looked.
    public static func locate(_ name: String, base: String, path: String?) -> (found: String?, looked: String) {
        if name.contains("/") {
            let full = name.hasPrefix("/") ? name : URL(fileURLWithPath: "\(base)/\(name)").standardizedFileURL.path
            return (FileManager.default.isExecutableFile(atPath: full) ? full : nil, full)
        }
        var directories: [String] = []
        if let me = Bundle.main.executableURL?.deletingLastPathComponent().path { directories.append(me) }
        directories += (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
        let found = directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        return (found, "next to instancepoller and on PATH")
    }

    /// Whether `name` may be allowlisted: a plain variable name, and not
    /// the socket variable the controller sets itself, nor one of the
    /// service manager's that are the controller's alone (`NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC`, `WATCHDOG_PID`: a shim speaking for the controller
    /// could tell systemd it is ready, or keep a wedged controller's
    /// watchdog fed).
    public static func isPassable(_ name: String) -> Bool {
        !name.isEmpty && !name.contains("=") && name != ShimContract.socketVariable && !SystemdNotifier.variables.contains(name)
    }

    /// The allowlisted variables' values from `environment` (those it has,
    /// and only passable ones).
    public static func allowlisted(_ names: [String], from environment: [String: String]) -> [String: String] {
        environment.filter { names.contains($0.key) && isPassable($0.key) }
    }
}

/// The user and group a root controller starts a shim as (`shim.user`,
/// `shim.group`): the shim gets exactly this uid and gid, `gid` as its only
/// supplementary group, no capabilities and no_new_privs.
public struct ShimUser: Hashable, Sendable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32
    /// As the config names it (a user name or a number), for messages.
    public var name: String

    public init(uid: UInt32, gid: UInt32, name: String) {
        self.uid = uid
        self.gid = gid
        self.name = name
    }

    public var description: String { name == "\(uid)" ? "uid \(uid)" : "\(name) (uid \(uid))" }

    /// Looks a user up by name, or takes a number as a uid; `group` (a name
    /// or a number) overrides the user's primary group. Returns the user,
    /// or what is wrong in one sentence.
    public static func resolve(user: String, group: String?) -> Result<ShimUser, Problem> {
        let uid: UInt32
        var primary: UInt32?
        if let entry = passwordEntry(user) {
            uid = entry.uid
            primary = entry.gid
        } else if let number = UInt32(user), number != UInt32.max {
            uid = number
            primary = passwordEntry(uid: number)?.gid
        } else {
            return .failure(Problem(field: "user", message: "no user \"\(user)\" on this system"))
        }
        let gid: UInt32
        if let group {
            if let found = groupID(group) {
                gid = found
            } else if let number = UInt32(group), number != UInt32.max {
                gid = number
            } else {
                return .failure(Problem(field: "group", message: "no group \"\(group)\" on this system"))
            }
        } else if let primary {
            gid = primary
        } else {
            return .failure(Problem(field: "user", message: "uid \(uid) has no entry in the user database; give shim.group too"))
        }
        return .success(ShimUser(uid: uid, gid: gid, name: user))
    }

    public struct Problem: Error, Hashable, Sendable {
        /// "user" or "group".
        public var field: String
        public var message: String
    }

    private static func passwordEntry(_ name: String) -> (uid: UInt32, gid: UInt32)? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return (entry.pw_uid, entry.pw_gid)
    }

    private static func passwordEntry(uid: UInt32) -> (uid: UInt32, gid: UInt32)? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return (entry.pw_uid, entry.pw_gid)
    }

    private static func groupID(_ name: String) -> UInt32? {
        var entry = group()
        var result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getgrnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return entry.gr_gid
    }
}
