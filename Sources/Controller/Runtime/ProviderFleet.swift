public import Core
public import Logging
public import ServiceLifecycle
internal import NIOConcurrencyHelpers
internal import SwiftProtobuf
#if canImport(Glibc)
internal import Glibc
#endif

/// Every configured provider's supervised shim, as one service and as the
/// poller's ``ProviderRouter``.
///
/// ``apply(_:)`` brings the fleet to a new set of providers (config reload):
/// new providers are started, removed ones stopped, and a provider whose
/// shim command changed is swapped live, the credentials its machines use
/// validated through the new shim first. When the service shuts down every shim is stopped
/// (`Shutdown`, drain, SIGTERM, SIGKILL), all at once.
public actor ProviderFleet: ProviderRouter, Service {
    private struct Member {
        var config: ProviderConfig
        let supervisor: ProviderSupervisor
        let supervision: Supervision
    }

    private let runtimeDirectory: String
    private let clock: any PollClock
    private let settings: SupervisionSettings
    private let callTimeout: Duration
    private let logger: Logger
    private let credentials: (any CredentialAPI)?
    private let metrics: ControllerMetrics?
    private var members: [String: Member] = [:]
    private var initial: [ProviderConfig]
    /// Every configured provider, in file order (the last ``apply(_:)``).
    private var configured: [ProviderConfig]
    /// With several controllers: the pairs held, which decide which
    /// providers' shims run (nil: every configured provider's).
    private let ownership: PairOwnership?
    private var stopping = false
    /// Members' supervisions on their way into ``run()``'s task group.
    private nonisolated let launches = AsyncStream.makeStream(of: Supervision.self)
    /// What the poller reads, without waiting for the actor.
    private nonisolated let routes = NIOLockedValueBox<[String: ProviderEndpoint]>([:])
    /// Told each time a provider's shim starts serving (the poller).
    private nonisolated let servingHandler = NIOLockedValueBox<(@Sendable (String) -> Void)?>(nil)
    /// Told each time a provider's shim was swapped (the poller).
    private nonisolated let swappedHandler = NIOLockedValueBox<(@Sendable (String) -> Void)?>(nil)

    /// - Parameter credentials: where a swap finds the credentials to
    ///   validate through the new shim (nil: no validation).
    public init(
        providers: [ProviderConfig],
        runtimeDirectory: String,
        clock: any PollClock,
        settings: SupervisionSettings,
        callTimeout: Duration = .seconds(30),
        credentials: (any CredentialAPI)?,
        metrics: ControllerMetrics? = nil,
        ownership: PairOwnership? = nil,
        logger: Logger
    ) {
        self.metrics = metrics
        self.initial = providers
        self.configured = providers
        self.ownership = ownership
        self.runtimeDirectory = runtimeDirectory
        self.clock = clock
        self.settings = settings
        self.callTimeout = callTimeout
        self.credentials = credentials
        self.logger = logger
    }

    public nonisolated func endpoint(for provider: String) -> ProviderEndpoint? {
        routes.withLockedValue { $0[provider] }
    }

    public nonisolated func whenShimServes(_ handler: @escaping @Sendable (String) -> Void) {
        servingHandler.withLockedValue { $0 = handler }
    }

    public nonisolated func whenProviderSwapped(_ handler: @escaping @Sendable (String) -> Void) {
        swappedHandler.withLockedValue { $0 = handler }
    }

    /// The supervisor of `provider`, if it is configured.
    public func supervisor(for provider: String) -> ProviderSupervisor? { members[provider]?.supervisor }

    public var providerNames: [String] { members.keys.sorted() }

    /// Whether ``run()`` has launched the configured providers' shims (each
    /// is then starting, serving, or waiting out a backoff).
    public var launched: Bool { initial.isEmpty }

    /// A provider's current configuration.
    public func config(of provider: String) -> ProviderConfig? { members[provider]?.config }

    /// Every provider's configuration and shim, in name order.
    public func snapshots() async -> [(ProviderConfig, ProviderSupervisor.Snapshot)] {
        var result: [(ProviderConfig, ProviderSupervisor.Snapshot)] = []
        for name in members.keys.sorted() {
            guard let member = members[name] else { continue }
            result.append((member.config, await member.supervisor.snapshot))
        }
        return result
    }

    /// Starts every provider's shim and keeps them supervised until the
    /// service group shuts down (or the task is cancelled), then stops them.
    /// Each provider's supervision, from the start or a reload, is a child
    /// task of this.
    public func run() async throws {
        for config in initial where isActive(config.name) { start(config) }
        initial = []
        await withDiscardingTaskGroup { group in
            group.addTask {
                try? await gracefulShutdown()
                await self.stopAll()
            }
            if let ownership {
                // Leases taken or lost start or stop providers' shims.
                let changes = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
                ownership.whenChanged { changes.continuation.yield() }
                group.addTask {
                    for await _ in changes.stream.cancelOnGracefulShutdown() {
                        for change in await self.followLeases() { self.logger.info("\(change)") }
                    }
                }
            }
            for await supervision in launches.stream {
                group.addTask { await supervision.run() }
            }
        }
    }

    private func start(_ config: ProviderConfig) {
        if getuid() == 0, config.shim.user == nil {
            logger.warning(
                "the shim runs as root with every capability; set shim.user to run it as an unprivileged user",
                metadata: ["provider": "\(config.name)"]
            )
        }
        let supervisor = ProviderSupervisor(
            provider: config.name, command: config.shim, runtimeDirectory: runtimeDirectory,
            clock: clock, settings: settings, callTimeout: config.callTimeout ?? callTimeout, metrics: metrics, logger: logger
        )
        let name = config.name
        supervisor.access.whenServing { [servingHandler] in servingHandler.withLockedValue { $0 }?(name) }
        let supervision = Supervision(supervisor)
        members[config.name] = Member(config: config, supervisor: supervisor, supervision: supervision)
        launches.continuation.yield(supervision)
        route(config, through: supervisor)
    }

    /// New calls to `config`'s provider go to its supervised shim, with its cloud spec.
    private func route(_ config: ProviderConfig, through supervisor: ProviderSupervisor) {
        routes.withLockedValue { $0[config.name] = ProviderEndpoint(cloud: config.cloud, access: supervisor.access) }
    }

    private func stop(_ name: String) async {
        guard let member = members.removeValue(forKey: name) else { return }
        routes.withLockedValue { _ = $0.removeValue(forKey: name) }
        await member.supervision.stop()
    }

    private func stopAll() async {
        stopping = true
        let all = Array(members.keys)
        await withTaskGroup(of: Void.self) { group in
            for name in all {
                guard let member = members.removeValue(forKey: name) else { continue }
                routes.withLockedValue { _ = $0.removeValue(forKey: name) }
                group.addTask { await member.supervision.stop() }
            }
        }
        logger.info("all shims stopped")
        // No more supervisions: run()'s group ends once these have.
        launches.continuation.finish()
    }

    /// What a reload did to one provider.
    public enum Change: Hashable, Sendable, CustomStringConvertible {
        case started(String)
        case stopped(String)
        case swapped(String)
        /// Only the cloud spec changed: new calls carry the new one.
        case cloudUpdated(String)
        /// The new shim failed; the old one keeps serving.
        case swapRefused(String, reason: String)

        public var description: String {
            switch self {
            case .started(let name): "provider \(name): started"
            case .stopped(let name): "provider \(name): stopped"
            case .swapped(let name): "provider \(name): shim swapped"
            case .cloudUpdated(let name): "provider \(name): cloud settings updated"
            case .swapRefused(let name, let reason): "provider \(name): swap refused, the old shim keeps serving: \(reason)"
            }
        }
    }

    /// Whether `provider`'s shim should run: always with one controller;
    /// with several, while this one holds a lease on one of its pairs.
    private func isActive(_ provider: String) -> Bool {
        guard let ownership else { return true }
        return ownership.held.contains { $0.provider == provider }
    }

    /// Starts the shims of providers whose first pair was just taken and
    /// stops those whose last pair was lost or handed back.
    private func followLeases() async -> [Change] {
        await reconcile()
    }

    /// Brings the fleet to `providers`; returns what changed, in name order.
    /// With several controllers, only the providers this one holds pairs of
    /// run a shim.
    public func apply(_ providers: [ProviderConfig]) async -> [Change] {
        configured = providers
        return await reconcile()
    }

    private func reconcile() async -> [Change] {
        guard !stopping else { return [] }
        let providers = configured.filter { isActive($0.name) }
        var changes: [Change] = []
        let wanted = Dictionary(providers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for name in members.keys.sorted() where wanted[name] == nil {
            await stop(name)
            changes.append(.stopped(name))
        }
        for config in providers.sorted(by: { $0.name < $1.name }) {
            guard let member = members[config.name] else {
                start(config)
                changes.append(.started(config.name))
                continue
            }
            if member.config.shim != config.shim {
                do {
                    try await swap(config.name, to: config)
                    changes.append(.swapped(config.name))
                } catch {
                    changes.append(.swapRefused(config.name, reason: "\(error)"))
                }
            } else if member.config.cloud != config.cloud {
                members[config.name]?.config = config
                route(config, through: member.supervisor)
                changes.append(.cloudUpdated(config.name))
            }
        }
        return changes
    }

    /// Swaps `provider`'s shim live to `config`'s command (and cloud): the
    /// new shim must hand-shake and accept every credential of the provider
    /// that its machines use and that is not already marked invalid or
    /// expired (one that no machine uses cannot block a swap). A refused
    /// swap is recorded by the supervisor (its snapshot's last refused
    /// swap). Once the new shim and cloud spec are in place, the poller is
    /// told, and polls every machine of the provider at once.
    public func swap(_ provider: String, to config: ProviderConfig) async throws {
        guard let member = members[provider] else {
            throw ShimStartError(provider: provider, problem: "no such provider is configured", stderrTail: "")
        }
        let check = credentialCheck(provider: provider, cloud: config.cloud, timeout: member.config.callTimeout ?? callTimeout)
        try await member.supervisor.swap(to: config.shim, check: check)
        members[provider]?.config = config
        route(config, through: member.supervisor)
        swappedHandler.withLockedValue { $0 }?(provider)
    }

    private func credentialCheck(provider: String, cloud: ProviderV1.CloudSpec, timeout: Duration) -> ProviderSupervisor.SwapCheck {
        let credentials = self.credentials
        let clock = self.clock
        return { client in
            guard let credentials else { return }
            // Invalid or expired, the gate refuses it whatever the shim says.
            for stored in try await credentials.credentialsInUse(provider: provider)
            where stored.invalidReason == nil && !(stored.expiresAt.map { $0 <= clock.now } ?? false) {
                let answer = try await client.validateCredential(cloud: cloud, credential: stored.wire, timeout: timeout)
                guard answer.valid else {
                    throw SwapCheckFailure(description: "it says credential \(stored.key) is not valid: \(answer.reason)")
                }
            }
        }
    }
}

/// One provider's supervision, run as a child task of ``ProviderFleet/run()``
/// until stopped (the supervisor then stops its shim).
final class Supervision: Sendable {
    private enum State { case waiting, running, ended }

    private let supervisor: ProviderSupervisor
    private let state = NIOLockedValueBox(State.waiting)
    private let stopRequested = AsyncStream.makeStream(of: Void.self)
    private let ended = Latch()

    init(_ supervisor: ProviderSupervisor) {
        self.supervisor = supervisor
    }

    /// Supervises until ``stop()`` (or cancelled); at most once.
    func run() async {
        let starts = state.withLockedValue { state in
            guard state == .waiting else { return false }
            state = .running
            return true
        }
        guard starts else { return }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.supervisor.run() }
            for await _ in stopRequested.stream {}
            group.cancelAll()
        }
        state.withLockedValue { $0 = .ended }
        ended.open()
    }

    /// Stops the supervision; returns once the supervisor has stopped.
    func stop() async {
        let running = state.withLockedValue { state in
            guard state == .waiting else { return true }
            // Never ran (its launch was dropped by a cancelled fleet).
            state = .ended
            return false
        }
        stopRequested.continuation.finish()
        if running { await ended.wait() } else { ended.open() }
    }
}

/// A new shim's answer that refused a swap.
struct SwapCheckFailure: Error, CustomStringConvertible {
    var description: String
}

extension StoredCredential {
    /// As it travels to a shim (over the 0600 socket only).
    public var wire: ProviderV1.Credential {
        .with {
            $0.name = name
            $0.authType = authType
            $0.attributes = attributes
            $0.expiresAtUnixNano = expiresAt?.nanosecondsSinceEpoch ?? 0
        }
    }
}
