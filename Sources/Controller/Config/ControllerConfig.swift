public import Core
public import Logging
internal import Foundation

/// The controller's configuration file (`instancepoller run --config FILE`),
/// as read by ``load(path:environment:)``. See `config/example.yaml` for a
/// complete, commented example.
public struct ControllerConfig: Sendable {
    /// The file it was read from.
    public var file: String
    /// The file's directory, absolute: relative paths in the file are
    /// relative to it, and configured shims run in it (so that a relative
    /// argument such as `--scenario scenario.yaml` is found whatever the
    /// controller's working directory).
    public var directory: String
    /// The SQLite store file; for a PostgreSQL store, its URL without a
    /// password (what logs and `status` show).
    public var storePath: String
    /// Set when the store is a shared PostgreSQL database
    /// (`store: postgres://…`); nil for the SQLite file at ``storePath``.
    public var postgres: PostgresLocation?
    /// `store_password_file`: where the PostgreSQL password is (else
    /// `PGPASSWORD` or `.pgpass`).
    public var storePasswordFile: String?
    /// `credential_key_file`: the keys that seal credential attributes at
    /// rest (``CredentialSealer``); required with PostgreSQL.
    public var credentialKeyFile: String?
    /// `events:`: how long the events log keeps its entries.
    public var eventRetention = EventRetention()
    /// `cluster:`: leases, for several controllers on one PostgreSQL.
    public var cluster = ClusterSettings()
    /// The store is in the default state directory, which the controller
    /// creates private (0700) when it is missing.
    public var storeDirectoryIsDefault = false
    /// The private (0700) directory for the shims' and the control API's
    /// sockets.
    public var runtimeDirectory: String
    public var logLevel: Logger.Level = .info
    public var logFormat: LogFormat = .human
    /// `host:port` on loopback where Prometheus metrics are served; nil: off.
    public var metricsAddress: String?
    /// `metrics.bearer_token_file`, and the token it holds: required on
    /// `/metrics` when set.
    public var metricsBearerTokenFile: String?
    public var metricsBearerToken: MetricsBearerToken?
    /// Bounds on the control socket's and the metrics endpoint's clients.
    public var limits = LimitSettings()
    public var poll = PollSettings()
    /// Bound of each provider call.
    public var callTimeout: Duration = .seconds(30)
    public var supervision = SupervisionSettings()
    /// `tracing:`: where spans go; nil: tracing is off.
    public var tracing: TracingSettings?
    /// In file order.
    public var providers: [ProviderConfig] = []
    public var credentials: [StoredCredential] = []
    /// Some credential's attributes are written in the file itself.
    public var hasInlineSecrets = false
    /// Problems worth a warning that do not stop the controller, one line
    /// each (e.g. inline secrets in a file others can read).
    public var warnings: [String] = []

    public init(file: String, storePath: String, runtimeDirectory: String) {
        self.file = file
        self.directory = Self.directory(of: file)
        self.storePath = storePath
        self.runtimeDirectory = runtimeDirectory
    }

    public func provider(named name: String) -> ProviderConfig? {
        providers.first { $0.name == name }
    }

    /// The poll settings of each provider that overrides the config's
    /// `poll:`, by provider name.
    public var providerPollSettings: [String: PollSettings] {
        var settings: [String: PollSettings] = [:]
        for provider in providers { settings[provider.name] = provider.poll }
        return settings
    }

    /// The call timeout of each provider that overrides the config's
    /// `poll.call_timeout`, by provider name.
    public var providerCallTimeouts: [String: Duration] {
        var timeouts: [String: Duration] = [:]
        for provider in providers { timeouts[provider.name] = provider.callTimeout }
        return timeouts
    }

    /// The absolute directory of `file` (relative to the working directory).
    public static func directory(of file: String) -> String {
        let absolute = file.hasPrefix("/") ? file : FileManager.default.currentDirectoryPath + "/" + file
        return URL(fileURLWithPath: absolute).deletingLastPathComponent().standardizedFileURL.path
    }
}

/// How much of the events log is kept (`events:` in the config): entries
/// older than ``keepFor`` and all but the newest ``keepRevisions`` are
/// removed every ``pruneInterval``. Both nil: kept forever.
public struct EventRetention: Hashable, Sendable {
    public var keepFor: Duration?
    public var keepRevisions: Int64?
    public var pruneInterval: Duration = .seconds(600)

    public init(keepFor: Duration? = nil, keepRevisions: Int64? = nil) {
        self.keepFor = keepFor
        self.keepRevisions = keepRevisions
    }

    public var isEnabled: Bool { keepFor != nil || keepRevisions != nil }
}

/// How controllers sharing a PostgreSQL store split the work
/// (docs/DESIGN.md §8).
public struct ClusterSettings: Hashable, Sendable {
    /// How long a lease (and a controller's membership) lasts unless
    /// renewed; renewed every third of it.
    public var leaseTTL: Duration = .seconds(10)
    /// This controller's holder id; nil: `host:pid:random`.
    public var name: String?

    public init(leaseTTL: Duration = .seconds(10), name: String? = nil) {
        self.leaseTTL = leaseTTL
        self.name = name
    }
}

public enum LogFormat: String, Hashable, Sendable, CaseIterable {
    /// logfmt: `ts=2026-11-24T22:13:25.123Z level=warning msg="shim down" provider=aws why=…`
    case human
    /// The same as `human`, by its format's name.
    case logfmt
    /// One JSON object per line.
    case json

    /// What the lines look like: `logfmt` is `human` by another name.
    public var output: LogFormat { self == .logfmt ? .human : self }
}

extension ControllerConfig {
    /// The settings a reload from `old` to this config changed but cannot
    /// apply (they take effect at the next restart), by their config names.
    public func settingsNeedingRestart(from old: ControllerConfig) -> [String] {
        var names: [String] = []
        if storePath != old.storePath || storePasswordFile != old.storePasswordFile { names.append("store") }
        if credentialKeyFile != old.credentialKeyFile { names.append("credential_key_file") }
        if eventRetention != old.eventRetention { names.append("events") }
        if cluster != old.cluster { names.append("cluster") }
        if runtimeDirectory != old.runtimeDirectory { names.append("runtime_directory") }
        if logLevel != old.logLevel || logFormat.output != old.logFormat.output { names.append("log") }
        if metricsAddress != old.metricsAddress || metricsBearerToken != old.metricsBearerToken { names.append("metrics") }
        if limits != old.limits { names.append("limits") }
        if poll != old.poll || callTimeout != old.callTimeout { names.append("poll") }
        for provider in providers {
            guard let before = old.provider(named: provider.name) else { continue }
            if provider.poll != before.poll || provider.callTimeout != before.callTimeout {
                names.append("providers.\(provider.name).poll")
            }
        }
        if supervision != old.supervision { names.append("supervision") }
        if tracing != old.tracing { names.append("tracing") }
        return names
    }
}

/// A configured provider: the shim that serves it and the cloud it reaches.
public struct ProviderConfig: Hashable, Sendable {
    public var name: String
    /// The shim command, resolved; its environment holds only the
    /// allowlisted variables.
    public var shim: ShimCommand
    /// The names of the allowlisted environment variables.
    public var environmentAllowlist: [String]
    public var cloud: ProviderV1.CloudSpec
    /// This provider's own `poll:` block, merged over the config's (nil:
    /// the config's `poll:` applies), e.g. a slower long poll for a
    /// rate-limited account.
    public var poll: PollSettings?
    /// This provider's `poll.call_timeout`, when its `poll:` block sets one.
    public var callTimeout: Duration?

    public init(
        name: String, shim: ShimCommand, environmentAllowlist: [String] = [], cloud: ProviderV1.CloudSpec,
        poll: PollSettings? = nil, callTimeout: Duration? = nil
    ) {
        self.name = name
        self.shim = shim
        self.environmentAllowlist = environmentAllowlist
        self.cloud = cloud
        self.poll = poll
        self.callTimeout = callTimeout
    }
}

