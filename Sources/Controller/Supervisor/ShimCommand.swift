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

    /// The allowlisted variables' values from `environment` (those it has).
    public static func allowlisted(_ names: [String], from environment: [String: String]) -> [String: String] {
        environment.filter { names.contains($0.key) }
    }
}
