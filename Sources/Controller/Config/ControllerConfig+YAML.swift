internal import Core
internal import Foundation
internal import Logging
internal import Yams
public import Support
#if canImport(Glibc)
internal import Glibc
#endif

extension ControllerConfig {
    /// Reads a config file. Relative paths in it (store, runtime directory,
    /// credential files, a shim command with a slash) are relative to the
    /// file's directory; a bare command name is looked for next to the
    /// running `instancepoller`, then on `PATH`.
    ///
    /// - Parameter environment: where allowlisted variables get their
    ///   values (the controller's own environment).
    /// - Throws: ``YAMLFileError`` naming the file, line, place and problem.
    public static func load(
        path: String,
        environment: [String: String]? = nil
    ) throws(YAMLFileError) -> ControllerConfig {
        let environment = environment ?? ProcessInfo.processInfo.environment
        let (text, mode) = try readTrusted(path)
        var config = try YAMLReader.parse(text, file: path) { reader, root throws(YAMLFileError) in
            try reader.controllerConfig(root, environment: environment)
        }
        if config.hasInlineSecrets, mode & 0o044 != 0 {
            config.warnings.append(
                "\(path) holds credential attributes and has mode \(PrivatePath.octal(mode)), so other users can read them; chmod 600 it, or move them to a credential file"
            )
        }
        return config
    }

    /// Reads the config file as sshd's StrictModes would: it names the
    /// commands the controller runs, so it must be a regular file owned by
    /// this user or root that group and others cannot write, in a directory
    /// others cannot rename it out of. What is checked is what is read: one
    /// descriptor, no second look by path.
    static func readTrusted(_ path: String) throws(YAMLFileError) -> (text: String, mode: mode_t) {
        var mode: mode_t = 0
        let text = try YAMLReader.readFile(path: path) { info throws(YAMLFileError) in
            guard info.st_uid == getuid() || info.st_uid == 0 else {
                throw YAMLFileError(file: path, problem: "the file belongs to \(PrivatePath.owner(info.st_uid)); it names the commands this controller runs, so it must be this user's or root's")
            }
            mode = info.st_mode & 0o7777
            guard mode & 0o022 == 0 else {
                throw YAMLFileError(file: path, problem: "the file has mode \(PrivatePath.octal(mode)): others can change the commands this controller runs; chmod go-w \(path)")
            }
            var directory = stat()
            let parent = UnixSocket.parentDirectory(of: path)
            if stat(parent, &directory) == 0 {
                do {
                    try PrivatePath.checkNoForeignWriters(directory: parent, directory)
                } catch {
                    throw YAMLFileError(file: path, problem: "its \(error)")
                }
            }
        }
        return (text, mode)
    }

    /// Parses config text; `file` names it in errors and relative paths are
    /// relative to its directory.
    public static func parse(
        _ text: String,
        file: String,
        environment: [String: String]? = nil
    ) throws(YAMLFileError) -> ControllerConfig {
        let environment = environment ?? ProcessInfo.processInfo.environment
        return try YAMLReader.parse(text, file: file) { reader, root throws(YAMLFileError) in
            try reader.controllerConfig(root, environment: environment)
        }
    }

    /// Where the runtime directory is when the config does not say:
    /// `$RUNTIME_DIRECTORY` (the one systemd made for the unit's
    /// `RuntimeDirectory=`; the first of several); else for root
    /// `/run/instancepoller`; for anyone else
    /// `$XDG_RUNTIME_DIR/instancepoller`, else `/tmp/instancepoller-<uid>`
    /// (created private; refused when someone else made it first).
    public static func defaultRuntimeDirectory(environment: [String: String]? = nil, uid: UInt32? = nil) -> String {
        let environment = environment ?? ProcessInfo.processInfo.environment
        if let unit = unitDirectory("RUNTIME_DIRECTORY", environment) { return unit }
        let uid = uid ?? getuid()
        if uid == 0 { return "/run/instancepoller" }
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") {
            return "\(runtime)/instancepoller"
        }
        return "/tmp/instancepoller-\(uid)"
    }

    /// Where the store is when the config does not say: a private (0700)
    /// state directory, `$STATE_DIRECTORY` (the one systemd made for the
    /// unit's `StateDirectory=`; the first of several), else
    /// `/var/lib/instancepoller` for root, else
    /// `$XDG_STATE_HOME/instancepoller` or `~/.local/state/instancepoller`.
    /// Nil when there is no home to put it in.
    public static func defaultStateDirectory(environment: [String: String]? = nil, uid: UInt32? = nil) -> String? {
        let environment = environment ?? ProcessInfo.processInfo.environment
        if let unit = unitDirectory("STATE_DIRECTORY", environment) { return unit }
        if (uid ?? getuid()) == 0 { return "/var/lib/instancepoller" }
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") {
            return "\(state)/instancepoller"
        }
        if let home = environment["HOME"], home.hasPrefix("/") {
            return "\(home)/.local/state/instancepoller"
        }
        return nil
    }

    /// The store's file name in the default state directory.
    public static let defaultStoreFileName = "instancepoller.db"

    /// The first absolute path of a directory variable systemd sets for a
    /// unit (`RUNTIME_DIRECTORY`, `STATE_DIRECTORY`: colon-separated when
    /// the unit names several).
    static func unitDirectory(_ variable: String, _ environment: [String: String]) -> String? {
        guard let value = environment[variable],
              let first = value.split(separator: ":", omittingEmptySubsequences: true).first, first.hasPrefix("/")
        else { return nil }
        return String(first)
    }
}

extension YAMLReader {
    /// - Parameter readingSecrets: false to check the config without
    ///   reading credential files or the metrics bearer token file (their
    ///   paths are taken as they are; a credential from a file gets no
    ///   attributes): for a CLI command that only needs the runtime directory.
    func controllerConfig(_ root: Node, environment: [String: String], readingSecrets: Bool = true) throws(YAMLFileError) -> ControllerConfig {
        let top = try mapping(root, "", allowed: [
            "store", "store_password_file", "credential_key_file", "events", "cluster",
            "runtime_directory", "log", "metrics", "poll", "supervision", "providers", "credentials", "limits", "tracing",
        ])
        var config = ControllerConfig(
            file: file,
            storePath: "",
            runtimeDirectory: ControllerConfig.defaultRuntimeDirectory(environment: environment)
        )
        if let node = top["store"], PostgresLocation.isURL(try string(node, "store")) {
            let location: PostgresLocation
            let text = try string(node, "store")
            do {
                location = try PostgresLocation.parse(text)
            } catch {
                throw fail(node, "store", error.description)
            }
            config.postgres = location
            config.storePath = location.description
        } else if let node = top["store"] {
            config.storePath = try path(node, "store")
        } else if let state = ControllerConfig.defaultStateDirectory(environment: environment) {
            config.storePath = "\(state)/\(ControllerConfig.defaultStoreFileName)"
            config.storeDirectoryIsDefault = true
        } else {
            throw fail(root, "store", "no store path and no home directory for the default (~/.local/state/instancepoller); set store")
        }
        if let node = top["store_password_file"] {
            guard config.postgres != nil else {
                throw fail(node, "store_password_file", "only a postgres:// store takes a password")
            }
            config.storePasswordFile = try path(node, "store_password_file")
        }
        if let node = top["credential_key_file"] { config.credentialKeyFile = try path(node, "credential_key_file") }
        if config.postgres != nil, config.credentialKeyFile == nil {
            throw fail(root, "credential_key_file", "a shared postgres:// store needs credential_key_file: credentials are sealed at rest (instancepoller credentials new-key makes one)")
        }
        if let node = top["events"] {
            let fields = try mapping(node, "events", allowed: ["keep_days", "keep_revisions", "prune_interval"])
            if let days = fields["keep_days"] {
                config.eventRetention.keepFor = .seconds(Int64(try count(days, "events.keep_days", 1...36_500)) * 86_400)
            }
            if let revisions = fields["keep_revisions"] {
                config.eventRetention.keepRevisions = Int64(try count(revisions, "events.keep_revisions", 1...1_000_000_000))
            }
            if let interval = fields["prune_interval"] {
                config.eventRetention.pruneInterval = try positiveDuration(interval, "events.prune_interval")
            }
        }
        if let node = top["cluster"] {
            guard config.postgres != nil else {
                throw fail(node, "cluster", "leases need a shared postgres:// store; a SQLite store has one controller")
            }
            let fields = try mapping(node, "cluster", allowed: ["lease_ttl", "name"])
            if let ttl = fields["lease_ttl"] {
                config.cluster.leaseTTL = try positiveDuration(ttl, "cluster.lease_ttl")
                guard config.cluster.leaseTTL >= .seconds(1) else { throw fail(ttl, "cluster.lease_ttl", "must be at least 1s") }
            }
            if let name = fields["name"] {
                let text = try string(name, "cluster.name")
                guard !text.isEmpty, text.count <= 128, text.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
                    throw fail(name, "cluster.name", "must be 1 to 128 printable ASCII characters without spaces")
                }
                config.cluster.name = text
            }
        }
        if let node = top["runtime_directory"] { config.runtimeDirectory = try path(node, "runtime_directory") }
        if let node = top["log"] {
            let fields = try mapping(node, "log", allowed: ["level", "format"])
            if let level = fields["level"] {
                config.logLevel = try choice(level, "log.level", Logger.Level.allCases.map { ($0.rawValue, $0) })
            }
            if let format = fields["format"] {
                config.logFormat = try choice(format, "log.format", LogFormat.allCases.map { ($0.rawValue, $0) })
            }
        }
        if let node = top["metrics"] {
            let fields = try mapping(node, "metrics", allowed: ["address", "bearer_token_file"])
            if let addressNode = fields["address"] {
                let text = try string(addressNode, "metrics.address")
                guard let parsed = MetricsAddress.parse(text) else {
                    throw fail(addressNode, "metrics.address", "expected host:port, e.g. 127.0.0.1:9464, not \"\(text)\"")
                }
                guard MetricsAddress.isLoopback(parsed.host) else {
                    throw fail(addressNode, "metrics.address", "\(parsed.host) is not a loopback address; metrics are served on 127.0.0.1, ::1 or localhost only")
                }
                config.metricsAddress = text
            }
            if let tokenNode = fields["bearer_token_file"], !readingSecrets {
                config.metricsBearerTokenFile = try path(tokenNode, "metrics.bearer_token_file")
            } else if let tokenNode = fields["bearer_token_file"] {
                let token = try bearerToken(tokenNode, "metrics.bearer_token_file")
                config.metricsBearerTokenFile = token.path
                config.metricsBearerToken = token.token
            }
        }
        if let node = top["limits"] { config.limits = try limits(node) }
        if let node = top["poll"] { (config.poll, config.callTimeout) = try poll(node, "poll", over: config.poll, callTimeout: config.callTimeout) }
        if let node = top["supervision"] { config.supervision = try supervision(node) }
        if let node = top["tracing"] { config.tracing = try tracing(node) }
        guard let providersNode = top["providers"] else {
            throw fail(root, "", "no providers: the config needs at least one under providers")
        }
        for entry in try namedEntries(providersNode, "providers") {
            var provider = try provider(entry.name, entry.key, entry.value, environment: environment)
            // A provider's own poll block overrides the config's, key by key.
            if let node = entry.value["poll"] {
                let (settings, timeout) = try poll(node, "providers.\(entry.name).poll", over: config.poll, callTimeout: config.callTimeout)
                provider.poll = settings
                provider.callTimeout = timeout
            }
            config.providers.append(provider)
        }
        guard !config.providers.isEmpty else { throw fail(providersNode, "providers", "at least one provider is needed") }
        if let node = top["credentials"] {
            for (index, item) in try sequence(node, "credentials").enumerated() {
                let place = "credentials[\(index)]"
                let credential = try credential(item, place, providers: config.providers.map(\.name), readingSecrets: readingSecrets)
                if item["attributes"] != nil { config.hasInlineSecrets = true }
                if config.credentials.contains(where: { $0.provider == credential.provider && $0.name == credential.name }) {
                    throw fail(item, place, "credential \(credential.provider)/\(credential.name) appears twice")
                }
                config.credentials.append(credential)
            }
        }
        return config
    }

    /// The config file's directory, absolute.
    var baseDirectory: String { ControllerConfig.directory(of: file) }

    /// A path, made absolute against the config file's directory.
    func path(_ node: Node, _ place: String) throws(YAMLFileError) -> String {
        let text = try string(node, place)
        guard !text.isEmpty else { throw fail(node, place, "the path is empty") }
        if text.hasPrefix("/") { return text }
        return URL(fileURLWithPath: "\(baseDirectory)/\(text)").standardizedFileURL.path
    }

    func positiveDuration(_ node: Node, _ place: String) throws(YAMLFileError) -> Duration {
        let value = try duration(node, place)
        guard value > .zero else { throw fail(node, place, "must be more than zero") }
        return value
    }

    /// A `poll:` block: the settings it names, the rest as in `base`.
    func poll(
        _ node: Node, _ place: String, over base: PollSettings, callTimeout baseTimeout: Duration
    ) throws(YAMLFileError) -> (PollSettings, Duration) {
        let fields = try mapping(node, place, allowed: [
            "short_poll", "backoff_factor", "short_poll_cap", "long_poll", "long_poll_jitter", "max_ids_per_call", "call_timeout",
        ])
        var settings = base
        var callTimeout = baseTimeout
        if let node = fields["short_poll"] { settings.shortPoll = try positiveDuration(node, "\(place).short_poll") }
        if let node = fields["backoff_factor"] { settings.backoffFactor = try number(node, "\(place).backoff_factor") }
        if let node = fields["short_poll_cap"] { settings.shortPollCap = try positiveDuration(node, "\(place).short_poll_cap") }
        if let node = fields["long_poll"] { settings.longPoll = try positiveDuration(node, "\(place).long_poll") }
        if let node = fields["long_poll_jitter"] { settings.longPollJitter = try number(node, "\(place).long_poll_jitter") }
        if let node = fields["max_ids_per_call"] {
            let value = try unsigned(node, "\(place).max_ids_per_call")
            guard value <= 100_000 else { throw fail(node, "\(place).max_ids_per_call", "at most 100000") }
            settings.maxIDsPerCall = Int(value)
        }
        if let node = fields["call_timeout"] { callTimeout = try positiveDuration(node, "\(place).call_timeout") }
        if let problem = settings.problem() { throw fail(node, place, problem) }
        return (settings, callTimeout)
    }

    func supervision(_ node: Node) throws(YAMLFileError) -> SupervisionSettings {
        let fields = try mapping(node, "supervision", allowed: [
            "health_interval", "health_timeout", "failed_checks", "initial_backoff", "max_backoff",
            "healthy_reset_after", "startup_timeout", "drain_timeout", "exit_grace",
        ])
        var settings = SupervisionSettings()
        if let node = fields["health_interval"] { settings.healthInterval = try positiveDuration(node, "supervision.health_interval") }
        if let node = fields["health_timeout"] { settings.healthTimeout = try positiveDuration(node, "supervision.health_timeout") }
        if let node = fields["failed_checks"] {
            let value = try unsigned(node, "supervision.failed_checks")
            guard (1...100).contains(value) else { throw fail(node, "supervision.failed_checks", "must be from 1 to 100") }
            settings.failedChecksBeforeRestart = Int(value)
        }
        if let node = fields["initial_backoff"] { settings.initialBackoff = try positiveDuration(node, "supervision.initial_backoff") }
        if let node = fields["max_backoff"] { settings.maximumBackoff = try positiveDuration(node, "supervision.max_backoff") }
        if let node = fields["healthy_reset_after"] { settings.healthyResetAfter = try positiveDuration(node, "supervision.healthy_reset_after") }
        if let node = fields["startup_timeout"] { settings.startupTimeout = try positiveDuration(node, "supervision.startup_timeout") }
        if let node = fields["drain_timeout"] { settings.drainTimeout = try positiveDuration(node, "supervision.drain_timeout") }
        if let node = fields["exit_grace"] { settings.exitGrace = try positiveDuration(node, "supervision.exit_grace") }
        if settings.maximumBackoff < settings.initialBackoff {
            throw fail(fields["max_backoff"] ?? node, "supervision.max_backoff", "must not be below initial_backoff")
        }
        return settings
    }

    /// Provider names become socket file names: keep them plain.
    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && name.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" || $0 == "."
        } && !name.hasPrefix(".")
    }

    func provider(_ name: String, _ key: Node, _ node: Node, environment: [String: String]) throws(YAMLFileError) -> ProviderConfig {
        let place = "providers.\(name)"
        guard Self.isPlainName(name) else {
            throw fail(key, place, "provider names use letters, digits, '-', '_' and '.' (at most 64)")
        }
        let fields = try mapping(node, place, allowed: ["shim", "cloud", "poll"])
        guard let shimNode = fields["shim"] else { throw fail(node, place, "a provider needs a shim (command, args, env)") }
        let shimFields = try mapping(shimNode, "\(place).shim", allowed: ["command", "args", "env", "user", "group"])
        guard let commandNode = shimFields["command"] else { throw fail(shimNode, "\(place).shim", "the shim needs a command") }
        let executable = try command(commandNode, "\(place).shim.command")
        let arguments = try shimFields["args"].map { (node) throws(YAMLFileError) in try stringList(node, "\(place).shim.args") } ?? []
        var allowlist: [String] = []
        if let envNode = shimFields["env"] {
            for (index, item) in try sequence(envNode, "\(place).shim.env").enumerated() {
                let variable = try string(item, "\(place).shim.env[\(index)]")
                guard ShimCommand.isPassable(variable) else {
                    throw fail(item, "\(place).shim.env[\(index)]", "\"\(variable)\" cannot be passed on")
                }
                allowlist.append(variable)
            }
        }
        let user = try shimUser(shimFields, "\(place).shim")
        var cloud = ProviderV1.CloudSpec()
        cloud.name = name
        if let cloudNode = fields["cloud"] {
            let cloudFields = try mapping(cloudNode, "\(place).cloud", allowed: ["type", "region", "endpoint", "attributes"])
            if let node = cloudFields["type"] { cloud.type = try string(node, "\(place).cloud.type") }
            if let node = cloudFields["region"] { cloud.region = try string(node, "\(place).cloud.region") }
            if let node = cloudFields["endpoint"] { cloud.endpoint = try string(node, "\(place).cloud.endpoint") }
            if let node = cloudFields["attributes"] { cloud.attributes = try stringMap(node, "\(place).cloud.attributes") }
        }
        guard !cloud.type.isEmpty else { throw fail(fields["cloud"] ?? node, "\(place).cloud.type", "the cloud needs a type, e.g. ec2 or fake") }
        return ProviderConfig(
            name: name,
            shim: ShimCommand(
                executable: executable, arguments: arguments, environment: ShimCommand.allowlisted(allowlist, from: environment), user: user,
                // Its relative arguments are relative to this file, as the
                // other paths in it are.
                workingDirectory: baseDirectory
            ),
            environmentAllowlist: allowlist,
            cloud: cloud
        )
    }

    /// `shim.user` (a user name or uid) and `shim.group` (a group name or
    /// gid; default: the user's primary group). A controller that is not
    /// root can start shims only as itself.
    func shimUser(_ fields: [String: Node], _ place: String) throws(YAMLFileError) -> ShimUser? {
        guard let userNode = fields["user"] else {
            if let groupNode = fields["group"] { throw fail(groupNode, "\(place).group", "give shim.user with shim.group") }
            return nil
        }
        let name = try string(userNode, "\(place).user")
        let group = try fields["group"].map { (node) throws(YAMLFileError) in try string(node, "\(place).group") }
        let user: ShimUser
        switch ShimUser.resolve(user: name, group: group) {
        case .success(let resolved): user = resolved
        case .failure(let problem): throw fail(fields[problem.field] ?? userNode, "\(place).\(problem.field)", problem.message)
        }
        let me = getuid()
        if me != 0, user.uid != me || user.gid != getgid() {
            throw fail(userNode, "\(place).user", "the controller runs as uid \(me), not root, so it cannot start a shim as \(user) gid \(user.gid); leave shim.user out or run the controller as root")
        }
        return user
    }

    /// A shim executable: a path (relative to the config file) or a name
    /// looked for next to this program, then on `PATH`.
    func command(_ node: Node, _ place: String) throws(YAMLFileError) -> String {
        let text = try string(node, place)
        guard !text.isEmpty else { throw fail(node, place, "the command is empty") }
        let located = ShimCommand.locate(text, base: baseDirectory, path: ProcessInfo.processInfo.environment["PATH"])
        guard let found = located.found else {
            throw fail(node, place, "no executable \"\(text)\" (looked \(located.looked))")
        }
        return found
    }

    func credential(_ node: Node, _ place: String, providers: [String], readingSecrets: Bool = true) throws(YAMLFileError) -> StoredCredential {
        let fields = try mapping(node, place, allowed: ["provider", "name", "auth_type", "attributes", "file", "expires"])
        guard let providerNode = fields["provider"] else { throw fail(node, place, "a credential needs a provider") }
        let provider = try string(providerNode, "\(place).provider")
        guard providers.contains(provider) else {
            throw fail(providerNode, "\(place).provider", "no provider \"\(provider)\" under providers")
        }
        guard let nameNode = fields["name"] else { throw fail(node, place, "a credential needs a name") }
        let name = try string(nameNode, "\(place).name")
        guard Self.isPlainName(name) else { throw fail(nameNode, "\(place).name", "credential names use letters, digits, '-', '_' and '.'") }
        guard let authNode = fields["auth_type"] else { throw fail(node, place, "a credential needs an auth_type, e.g. access-key") }
        let authType = try string(authNode, "\(place).auth_type")
        var attributes: [String: String]
        switch (fields["attributes"], fields["file"]) {
        case (let inline?, nil):
            attributes = try stringMap(inline, "\(place).attributes")
        case (nil, let fileNode?) where !readingSecrets:
            _ = try path(fileNode, "\(place).file")
            attributes = [:]
        case (nil, let fileNode?):
            attributes = try secretFile(fileNode, "\(place).file")
        case (_?, _?):
            throw fail(node, place, "give either attributes or file, not both")
        case (nil, nil):
            throw fail(node, place, "a credential needs attributes or a file holding them")
        }
        var expires: Timestamp?
        if let node = fields["expires"] {
            let text = try string(node, "\(place).expires")
            guard let date = ISO8601DateFormatter().date(from: text) else {
                throw fail(node, "\(place).expires", "expected a time such as 2027-01-31T00:00:00Z, not \"\(text)\"")
            }
            expires = Timestamp(nanosecondsSinceEpoch: Int64(date.timeIntervalSince1970 * 1e9))
        }
        return StoredCredential(provider: provider, name: name, authType: authType, attributes: attributes, expiresAt: expires)
    }

    /// A credential's attributes from their own YAML file, which only its
    /// owner may read (0600 or stricter). Errors never quote its content.
    func secretFile(_ node: Node, _ place: String) throws(YAMLFileError) -> [String: String] {
        let path = try self.path(node, place)
        let text: String
        do {
            text = String(decoding: try SecretFile.contents(of: path, regularFileOnly: true), as: UTF8.self)
        } catch {
            throw fail(node, place, error.problem)
        }
        do {
            return try YAMLReader.parse(text, file: path) { reader, root throws(YAMLFileError) in
                try reader.stringMap(root, "attributes")
            }
        } catch {
            // Name the config's line, and the credential file's line without its text.
            let location = error.line > 0 ? "\(path):\(error.line)" : path
            throw fail(node, place, "\(location): \(error.problem.hasPrefix("not valid YAML") ? "not valid YAML" : error.problem)")
        }
    }
}
