internal import Foundation

/// How to start a provider's shim: `executable arguments…` with exactly
/// this environment (the provider's allowlist, resolved) plus
/// `INSTANCEPOLLER_SOCKET`. Nothing else of the controller's environment is
/// passed on, and secrets never travel here: they go over the socket.
public struct ShimCommand: Hashable, Sendable {
    public var executable: String
    public var arguments: [String]
    public var environment: [String: String]

    public init(executable: String, arguments: [String] = [], environment: [String: String] = [:]) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
    }

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
    /// the socket variable the controller sets itself.
    public static func isPassable(_ name: String) -> Bool {
        !name.isEmpty && !name.contains("=") && name != "INSTANCEPOLLER_SOCKET"
    }

    /// The allowlisted variables' values from `environment` (those it has).
    public static func allowlisted(_ names: [String], from environment: [String: String]) -> [String: String] {
        environment.filter { names.contains($0.key) }
    }
}
