internal import Core
public import Logging
internal import ServiceLifecycle
internal import UnixSignals
internal import NIOConcurrencyHelpers
public import Support
internal import ControlAPI
#if canImport(Glibc)
internal import Glibc
#endif

/// The controller process (`instancepoller run`): the runtime directory, then
/// one service group — the store, the supervised shims, the poller, the
/// signal handler, the metrics server (if configured) and the control
/// server, started in that order, each once the one before it has started,
/// and stopped in reverse (docs/DESIGN.md §6.4.6).
///
/// - SIGTERM / SIGINT: the group shuts down gracefully in reverse order:
///   the servers stop accepting, let the calls in flight finish (the
///   control server's for up to ``controlDrain``) and close; the
///   poller stops scheduling (calls in flight are cancelled); every shim
///   is stopped (`Shutdown`, bounded drain, SIGTERM, SIGKILL); the store
///   closes. Then the sockets are removed.
/// - SIGHUP: read the config file again (one reload at a time); swap shims whose command changed,
///   start new providers, stop removed ones, update credentials. A config
///   with an error changes nothing and the error is logged.
public enum ControllerRuntime {
    /// A start that could not happen; the message says why.
    public struct StartFailure: Error, CustomStringConvertible {
        public var description: String
    }

    /// A started controller, for whoever embeds it (the demo).
    public struct Started: Sendable {
        /// The control API's socket.
        public var controlSocket: String
        /// `host:port` of the metrics endpoint, if one is configured.
        public var metricsAddress: String?
        public var fleet: ProviderFleet
    }

    /// How long the control server lets its calls in flight finish when the
    /// controller stops. A control call is a store transaction or a look at
    /// the fleet; only a swap or an `Events` long poll (`watch`) takes
    /// longer, and neither is worth holding the stop for: the swap is
    /// cancelled (the shims stop next anyway), the watcher is cut off.
    static let controlDrain: Duration = .seconds(2)

    /// Every control client and shim connection is a descriptor, and the
    /// usual soft limit (1 024) is low for a busy controller: raise it to the
    /// hard limit, as Go's runtime does for its programs. Shims inherit it.
    static func raiseDescriptorLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        let soft = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            logger.debug("raised the open-descriptor limit", metadata: ["from": "\(soft)", "to": "\(limit.rlim_max)"])
        } else {
            logger.notice("could not raise the open-descriptor limit", metadata: ["limit": "\(soft)", "error": "\(String(cString: strerror(errno)))"])
        }
    }

    /// Runs until SIGTERM or SIGINT, or until `until` returns.
    ///
    /// - Parameters:
    ///   - environment: where the shims' allowlisted variables come from
    ///     (swaps through the control API read it too).
    ///   - onStarted: called once everything serves; cancelled when the
    ///     controller stops.
    ///   - until: when it returns, the controller stops (cancelled if it
    ///     stops first).
    ///   - build: what `instancepoller_build_info` says: the executable's
    ///     version and git revision (this version and "unknown" if nil).
    /// - Throws: ``StartFailure`` when it could not start (nothing runs
    ///   then); a service's error otherwise.
    public static func run(
        config: ControllerConfig,
        logger: Logger,
        environment: [String: String] = [:],
        onStarted: @escaping @Sendable (Started) async -> Void = { _ in },
        until: (@Sendable () async -> Void)? = nil,
        build: BuildInfo? = nil
    ) async throws {
        // Trapped before anything starts, so that a signal that comes early
        // is not fatal (SIGHUP's default action) and is not lost.
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
        raiseDescriptorLimit(logger: logger)
        for warning in config.warnings { logger.warning("\(warning)") }
        let runtime: RuntimeDirectory
        do {
            runtime = try RuntimeDirectory(path: config.runtimeDirectory, logger: logger)
        } catch {
            throw StartFailure(description: "\(error)")
        }
        defer { runtime.close() }
        let clock = SystemPollClock()
        // The config's tracing: block, on before the first call; nil: off.
        let tracing: (any Service)?
        do {
            tracing = try ControllerTracing.start(config.tracing, logger: logger)
        } catch {
            throw StartFailure(description: "tracing: \(error)")
        }
        let sealer: CredentialSealer?
        do {
            sealer = try config.credentialKeyFile.map { try CredentialSealer(keyFile: $0) }
        } catch {
            throw StartFailure(description: "\(error)")
        }
        let metrics = ControllerMetrics(
            build: build ?? BuildInfo(version: ProductVersion.current, revision: "unknown"), configLoadedAt: clock.now)
        let store: StoreService
        var cluster: (manager: LeaseManager, ownership: PairOwnership)?
        if let location = config.postgres {
            let password: String?
            do {
                password = try location.password(passwordFile: config.storePasswordFile, environment: environment)
            } catch {
                throw StartFailure(description: "store: \(error)")
            }
            let postgres = PostgresMachineStore(location: location, password: password, sealer: sealer, clock: clock, logger: logger)
            store = StoreService(postgres: postgres, credentials: config.credentials, logger: logger)
            let host = hostName()
            let identity = ControllerIdentity(
                holder: config.cluster.name ?? LeaseManager.holderID(host: host, pid: getpid()), host: host, pid: getpid(),
                version: ProductVersion.current)
            let ownership = PairOwnership()
            let manager = LeaseManager(
                store: postgres, identity: identity, ttl: config.cluster.leaseTTL, ownership: ownership, metrics: metrics, logger: logger)
            cluster = (manager, ownership)
        } else {
            do {
                store = StoreService(
                    sqlite: try SQLiteMachineStore(
                        path: config.storePath, createDirectory: config.storeDirectoryIsDefault, sealer: sealer, clock: clock, logger: logger),
                    logger: logger
                )
            } catch {
                throw StartFailure(description: "\(error)")
            }
            // Closed by its service; here when the group never ran.
            try await syncCredentials(config.credentials, into: store.store, logger: logger)
        }
        defer { store.close() }

        let credentials = StoreCredentialAPI(store: store.store)
        let fleet = ProviderFleet(
            providers: config.providers, runtimeDirectory: runtime.path, clock: clock,
            settings: config.supervision, callTimeout: config.callTimeout, credentials: credentials, metrics: metrics,
            ownership: cluster?.ownership, logger: logger
        )
        // Shared: every controller's changes arrive as notifications,
        // so the log is read less often (docs/DESIGN.md §8).
        let watchInterval: Duration = config.postgres == nil ? .seconds(1) : .seconds(5)
        let poller = try Poller(config: PollerConfig(
            clock: clock, store: store.store, providers: fleet, credentials: credentials, logger: logger, settings: config.poll,
            providerSettings: config.providerPollSettings,
            watchInterval: watchInterval,
            metrics: metrics, ownership: cluster?.ownership
        ))
        // Readiness (`/readyz`) and the service manager's notifications
        // (docs/DESIGN.md §6.4.6).
        let health = ControllerHealth(
            storeCheck: { [store = store.store] in _ = try await store.latestRevision() },
            shims: { await fleet.shimStates() }, heartbeat: poller.heartbeat, clock: clock,
            pollStallLimit: ControllerHealth.pollStallLimit(
                watchInterval: watchInterval, callTimeouts: [config.callTimeout] + config.providers.compactMap(\.callTimeout))
        )
        let notifications = ServiceNotifications(
            notifier: SystemdNotifier(environment: environment, logger: logger), health: health, clock: clock, after: nil, logger: logger)
        // One watcher of the store wakes every waiting `Events` call.
        let eventsFeed = EventsFeed(store: store.store, clock: clock)
        // This process's changes (the control API, a reload) are read at once.
        store.setChangeHandler {
            poller.storeChanged()
            eventsFeed.nudge()
        }
        // Both servers listen before the group runs, so that a socket that
        // cannot be had is a start failure; they serve once started.
        let metricsServer: MetricsServer?
        if let address = config.metricsAddress, let parsed = MetricsAddress.parse(address) {
            do {
                metricsServer = try await MetricsServer.bind(
                    host: parsed.host, port: parsed.port, metrics: metrics, limits: config.limits.metrics,
                    bearerToken: config.metricsBearerToken, health: health, logger: logger
                )
            } catch {
                throw StartFailure(description: "\(error)")
            }
        } else {
            metricsServer = nil
        }
        let control = ControlService(
            identity: .init(
                pid: getpid(), version: ProductVersion.current, startedAt: clock.now, storePath: config.storePath, runtimeDirectory: runtime.path,
                holder: cluster?.manager.identity.holder),
            store: store.store, fleet: fleet, clock: clock, environment: environment, eventsFeed: eventsFeed,
            shimDirectory: config.directory, sealer: sealer, logger: logger
        )
        var registry = RPCServiceRegistry()
        control.register(into: &registry)
        let controlSocket = "\(runtime.path)/\(ControlV1.socketName)"
        let controlServer: RPCServer
        do {
            let serverConfig = RPCServer.Configuration(limits: config.limits.control) { limit in
                metrics.serverLimitHit(server: "control", limit: limit.rawValue)
            }
            controlServer = try await RPCServer.bind(unixSocketPath: controlSocket, registry: registry, configuration: serverConfig, logger: logger)
        } catch {
            await metricsServer?.close()
            throw StartFailure(description: "cannot serve the control API on \(controlSocket): \(error)")
        }
        metrics.onScrape {
            let stats = controlServer.limitStats
            metrics.server("control", connections: stats.connections, bufferedRequestBytes: stats.bufferedRequestBytes)
        }
        let handle = GroupHandle()
        let reloader = ConfigReloader(
            config: config, fleet: fleet, store: store.store, sealer: sealer, metrics: metrics, clock: clock, logger: logger)

        // In dependency order; the group stops them in reverse.
        var chain: [RuntimeService] = []
        func add(_ name: String, _ service: any Service) {
            chain.append(RuntimeService(name: name, base: service, after: chain.last?.started, logger: logger))
        }
        // First, so that it stops last: the spans of the stop are sent.
        if let tracing { add("tracing", tracing) }
        add("store", store)
        if let cluster { add("leases", cluster.manager) }
        add("shims", fleet)
        add("poller", poller)
        if config.eventRetention.isEnabled {
            add("retention", EventRetentionService(store: store.store, retention: config.eventRetention, clock: clock, logger: logger))
        }
        add("signals", SignalService(signals: signals, reloader: reloader, group: handle, notifications: notifications, logger: logger))
        if let metricsServer { add("metrics", metricsServer) }
        add("control", RPCServerService(server: controlServer, drainTimeout: controlDrain))
        var services = chain.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0, serviceName: $0.name) }
        let started = Started(controlSocket: controlSocket, metricsAddress: metricsServer?.address, fleet: fleet)
        services.append(.init(
            service: AnnounceService(
                after: chain.last!.started, started: started,
                metadata: [
                    "pid": "\(getpid())", "providers": "\(config.providers.map(\.name).joined(separator: ","))",
                    "store": "\(config.storePath)", "runtime_directory": "\(runtime.path)", "control": "\(controlSocket)",
                ],
                onStarted: onStarted, logger: logger
            ),
            serviceName: "announce"
        ))
        // Stopped before the announcement: STOPPING=1 is the stop's first word.
        notifications.after = chain.last!.started
        services.append(.init(service: notifications, serviceName: "notify"))
        if let until {
            services.append(.init(service: UntilService(until: until), successTerminationBehavior: .gracefullyShutdownGroup, serviceName: "until"))
        }
        var groupConfig = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // Each stop is bounded: the control server's drain and hang-up
        // grace, the metrics server's grace, then the shims' drain and their
        // SIGTERM and SIGKILL graces.
        let supervision = config.supervision
        groupConfig.maximumGracefulShutdownDuration = controlDrain + .seconds(2) + MetricsServer.hangUpGrace
            + supervision.drainTimeout + supervision.exitGrace * 3 + .seconds(5)
        let group = ServiceGroup(configuration: groupConfig)
        handle.set(group)
        try await group.run()
        logger.info("controller stopped")
    }

    /// This machine's name, as the other controllers see it.
    static func hostName() -> String {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "localhost" }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Sets the config's credentials that differ from the store's (a
    /// changed credential is validated again before its next batch).
    static func syncCredentials(_ credentials: [StoredCredential], into store: any MachineStore, logger: Logger) async throws {
        for credential in credentials {
            let stored = try await store.credential(provider: credential.provider, name: credential.name)
            if let stored, stored.authType == credential.authType, stored.attributes == credential.attributes,
               stored.expiresAt == credential.expiresAt
            {
                continue
            }
            try await store.setCredential(credential)
            logger.info("credential set from the config", metadata: ["credential": "\(credential.provider)/\(credential.name)"])
        }
    }
}

/// Reloads the config file (on SIGHUP), and the credential key file with
/// it (a key rotation step: docs/DESIGN.md §6.7).
final class ConfigReloader: Sendable {
    private let current: NIOLockedValueBox<ControllerConfig>
    let fleet: ProviderFleet
    let store: any MachineStore
    /// The store's sealer, when a credential_key_file is configured.
    let sealer: CredentialSealer?
    /// Told whether each reload changed everything it asked for.
    let metrics: ControllerMetrics?
    let clock: any PollClock
    let logger: Logger

    init(
        config: ControllerConfig, fleet: ProviderFleet, store: any MachineStore, sealer: CredentialSealer? = nil,
        metrics: ControllerMetrics? = nil, clock: any PollClock = SystemPollClock(), logger: Logger
    ) {
        self.current = NIOLockedValueBox(config)
        self.fleet = fleet
        self.store = store
        self.sealer = sealer
        self.metrics = metrics
        self.clock = clock
        self.logger = logger
    }

    /// Reloads, and says in the metrics whether it succeeded: not when the
    /// file could not be loaded, the keys or the credentials could not be
    /// reloaded, or a swap was refused (docs/DESIGN.md §8).
    func reload() async {
        let succeeded = await apply()
        metrics?.configReloaded(successful: succeeded, at: clock.now)
    }

    /// Returns whether everything the new config asks for changed.
    private func apply() async -> Bool {
        let old = current.withLockedValue { $0 }
        logger.info("reloading the config", metadata: ["file": "\(old.file)"])
        let config: ControllerConfig
        do {
            config = try ControllerConfig.load(path: old.file)
        } catch {
            logger.error("config not reloaded, nothing changed: \(error)")
            return false
        }
        for warning in config.warnings { logger.warning("\(warning)") }
        let needRestart = config.settingsNeedingRestart(from: old)
        if !needRestart.isEmpty {
            logger.warning("changed settings take effect at the next restart", metadata: ["settings": "\(needRestart.joined(separator: ","))"])
        }
        // The keys first: credentials the config changed are sealed with the new first key.
        var succeeded = reloadKeys()
        do {
            try await ControllerRuntime.syncCredentials(config.credentials, into: store, logger: logger)
        } catch {
            logger.error("credentials not reloaded: \(error)")
            succeeded = false
        }
        let changes = await fleet.apply(config.providers)
        var refused: [String] = []
        for change in changes {
            if case .swapRefused = change {
                logger.error("\(change)")
                refused.append("\(change)")
            } else {
                logger.info("\(change)")
            }
        }
        // A refused swap keeps the old command, so the next reload tries again.
        current.withLockedValue { $0 = config }
        let applied = changes.count - refused.count
        if refused.isEmpty {
            logger.info("config reloaded", metadata: ["changes": "\(applied)"])
            return succeeded
        } else {
            // Not a success: say what did not change, and why.
            logger.error(
                "config reloaded in part; \(TextEscaping.oneLine(refused.joined(separator: "; ")))",
                metadata: ["changes": "\(applied)", "refused": "\(refused.count)"])
            return false
        }
    }

    /// Reads the credential key file again; on a problem the keys stay
    /// what they were. Logs the id of the key that seals, never a key.
    /// Returns whether they were reloaded (or there are none).
    private func reloadKeys() -> Bool {
        guard let sealer else { return true }
        do {
            try sealer.reload()
            logger.info("credential keys reloaded", metadata: ["key": "\(sealer.currentKeyID)"])
            return true
        } catch {
            logger.error("credential keys not reloaded, the old keys stay: \(error)")
            return false
        }
    }
}
