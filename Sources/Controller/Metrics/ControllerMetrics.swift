public import Prometheus
internal import NIOConcurrencyHelpers
public import Support
internal import Core

/// The controller's Prometheus metrics (docs/DESIGN.md §6.6), in one registry that the
/// metrics endpoint serves. Labels never carry a secret: provider and
/// credential *names*, method names and result codes only.
///
/// | metric | labels |
/// |---|---|
/// | `instancepoller_polls_total` | provider, result (ok, error, credential_invalid, throttled, shim_down) |
/// | `instancepoller_provider_calls_total` | provider, method, result (ok or the status code, or shim_down) |
/// | `instancepoller_provider_call_duration_seconds` | provider, method (histogram) |
/// | `instancepoller_batch_size` | provider (histogram of machines per batch) |
/// | `instancepoller_machines` | group (short, long) |
/// | `instancepoller_machines_overdue` | provider (due more than one interval ago) |
/// | `instancepoller_last_successful_poll_timestamp_seconds` | provider |
/// | `instancepoller_credential_valid` | provider, credential (1 usable, 0 invalid) |
/// | `instancepoller_credential_expiry_timestamp_seconds` | provider, credential (only credentials with an expiry) |
/// | `instancepoller_config_last_reload_successful` | (1 or 0) |
/// | `instancepoller_config_last_reload_success_timestamp_seconds` | |
/// | `instancepoller_build_info` | version, revision (always 1) |
/// | `instancepoller_shim_up` | provider (1 serving, 0 down) |
/// | `instancepoller_shim_restarts_total` | provider |
/// | `instancepoller_server_connections` | server (control, metrics) |
/// | `instancepoller_server_buffered_request_bytes` | server |
/// | `instancepoller_server_limit_hits_total` | server, limit (connections, idle_timeout, frame_timeout, request_memory, backpressure, peer, header_timeout, header_size, unauthorized) |
///
/// With ``init(build:configLoadedAt:registry:)`` (the controller's) also the
/// standard process metrics (``ProcessMetrics``): `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`.
public final class ControllerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let scrapeHooks = NIOLockedValueBox<[@Sendable () -> Void]>([])
    /// The series of gauges whose label sets come and go (a provider or a
    /// credential removed): the ones set last, so that the rest are
    /// unregistered.
    private let overdueSeries = NIOLockedValueBox<[String: Gauge]>([:])
    private let expirySeries = NIOLockedValueBox<[CredentialSeries: Gauge]>([:])

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    /// The controller's metrics: `instancepoller_build_info` from `build`,
    /// the config as loaded successfully at `configLoadedAt` (as Prometheus
    /// counts its own start), and the process metrics read at each scrape.
    public convenience init(build: BuildInfo, configLoadedAt: Timestamp, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.init(registry: registry)
        registry.makeGauge(descriptor: Self.buildInfo, labels: [("version", build.version), ("revision", build.revision)]).set(to: 1)
        configReloaded(successful: true, at: configLoadedAt)
        let process = ProcessMetrics(registry: registry)
        onScrape { process.update() }
    }

    /// The text exposition format; gauges read at scrape time are
    /// refreshed first.
    public func render() -> String {
        for hook in scrapeHooks.withLockedValue({ $0 }) { hook() }
        return registry.emitToString()
    }

    /// Runs `hook` before each render, e.g. to set gauges from a server.
    public func onScrape(_ hook: @escaping @Sendable () -> Void) {
        scrapeHooks.withLockedValue { $0.append(hook) }
    }

    private static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "instancepoller", metricName: metric, unitName: unit, helpText: help)
    }

    static var polls: MetricNameDescriptor { name("polls", "total", "Batches polled, by outcome.") }
    static var calls: MetricNameDescriptor { name("provider_calls", "total", "Calls to provider shims, by method and result.") }
    static var callDuration: MetricNameDescriptor { name("provider_call_duration", "seconds", "Latency of calls to provider shims.") }
    static var batchSize: MetricNameDescriptor { name("batch_size", "", "Machines per polled batch.") }
    static var machinesOverdue: MetricNameDescriptor {
        name("machines_overdue", "", "Machines whose next poll is due more than one poll interval ago, by provider.")
    }
    static var lastSuccessfulPoll: MetricNameDescriptor {
        name("last_successful_poll_timestamp", "seconds", "When a batch of the provider was last polled and written successfully, in seconds since the epoch.")
    }
    static var credentialExpiry: MetricNameDescriptor {
        name("credential_expiry_timestamp", "seconds", "When a credential stored with an expiry expires, in seconds since the epoch.")
    }
    static var configReloadSuccessful: MetricNameDescriptor {
        name("config_last_reload_successful", "", "1 if the last config load or reload changed everything it asked for, 0 if not.")
    }
    static var configReloadTime: MetricNameDescriptor {
        name("config_last_reload_success_timestamp", "seconds", "When the config was last loaded or reloaded successfully, in seconds since the epoch.")
    }
    static var buildInfo: MetricNameDescriptor {
        name("build_info", "", "Always 1; the version and git revision the controller was built from.")
    }
    static var machines: MetricNameDescriptor { name("machines", "", "Machines tracked per poll group.") }
    static var leasesHeld: MetricNameDescriptor {
        name("leases_held", "", "(provider, credential) pairs whose lease this controller holds (several controllers on PostgreSQL).")
    }
    static var clusterControllers: MetricNameDescriptor {
        name("cluster_controllers", "", "Live controllers on the store, as this one saw them at its last lease renewal.")
    }
    static var leaseRenewalFailures: MetricNameDescriptor {
        name("lease_renewal_failures", "total", "Lease renewals that failed (leases run out after three in a row).")
    }
    static var leasesLost: MetricNameDescriptor {
        name("leases_lost", "total", "Leases another controller claimed while this one held them.")
    }
    static var credentialValid: MetricNameDescriptor { name("credential_valid", "", "1 while a credential is usable, 0 once it is found invalid.") }
    static var shimUp: MetricNameDescriptor { name("shim_up", "", "1 while the provider's shim serves, 0 while it is down.") }
    static var shimRestarts: MetricNameDescriptor { name("shim_restarts", "total", "Restarts of the provider's shim.") }
    static var serverConnections: MetricNameDescriptor { name("server_connections", "", "Open client connections, by server.") }
    static var serverBuffered: MetricNameDescriptor {
        name("server_buffered_request", "bytes", "Request bytes read but not yet served (unfinished frames and queued frames), by server.")
    }
    static var serverLimitHits: MetricNameDescriptor {
        name("server_limit_hits", "total", "Times a server limit refused, closed or paused a client connection, by server and limit.")
    }

    static let durationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
    ]
    static let sizeBuckets: [Double] = [1, 5, 10, 25, 50, 100, 200, 500, 1000]

    public func batchPolled(provider: String, size: Int, result: String) {
        registry.makeCounter(descriptor: Self.polls, labels: [("provider", provider), ("result", result)]).increment()
        registry.makeValueHistogram(descriptor: Self.batchSize, labels: [("provider", provider)], buckets: Self.sizeBuckets)
            .record(Double(size))
    }

    public func providerCall(provider: String, method: String, result: String, duration: Duration) {
        registry.makeCounter(descriptor: Self.calls, labels: [("provider", provider), ("method", method), ("result", result)]).increment()
        registry.makeDurationHistogram(
            descriptor: Self.callDuration, labels: [("provider", provider), ("method", method)], buckets: Self.durationBuckets
        ).record(duration)
    }

    public func machines(short: Int, long: Int) {
        registry.makeGauge(descriptor: Self.machines, labels: [("group", "short")]).set(to: Double(short))
        registry.makeGauge(descriptor: Self.machines, labels: [("group", "long")]).set(to: Double(long))
    }

    /// The leases held and the live controllers seen at a renewal (both
    /// 0 before the first and after leaving). The first call also starts
    /// the lease counters at 0, so that `increase()` sees the first.
    public func leases(held: Int, liveControllers: Int) {
        registry.makeGauge(descriptor: Self.leasesHeld).set(to: Double(held))
        registry.makeGauge(descriptor: Self.clusterControllers).set(to: Double(liveControllers))
        _ = registry.makeCounter(descriptor: Self.leaseRenewalFailures)
        _ = registry.makeCounter(descriptor: Self.leasesLost)
    }

    public func leaseRenewalFailed() { registry.makeCounter(descriptor: Self.leaseRenewalFailures).increment() }

    public func leaseLost() { registry.makeCounter(descriptor: Self.leasesLost).increment() }

    public func credential(provider: String, name: String, valid: Bool) {
        registry.makeGauge(descriptor: Self.credentialValid, labels: [("provider", provider), ("credential", name)]).set(to: valid ? 1.0 : 0.0)
    }

    public func shim(provider: String, up: Bool) {
        registry.makeGauge(descriptor: Self.shimUp, labels: [("provider", provider)]).set(to: up ? 1.0 : 0.0)
        // From 0, so that `increase()` sees the first restart.
        _ = registry.makeCounter(descriptor: Self.shimRestarts, labels: [("provider", provider)])
    }

    public func shimRestarted(provider: String) {
        registry.makeCounter(descriptor: Self.shimRestarts, labels: [("provider", provider)]).increment()
    }

    /// A server's limit was hit.
    public func serverLimitHit(server: String, limit: String) {
        registry.makeCounter(descriptor: Self.serverLimitHits, labels: [("server", server), ("limit", limit)]).increment()
    }

    /// A server's open connections and buffered request bytes now.
    public func server(_ server: String, connections: Int, bufferedRequestBytes: Int) {
        // Every limit's count from 0, so that `increase()` sees the first hit.
        for limit in ServerLimit.allCases {
            _ = registry.makeCounter(descriptor: Self.serverLimitHits, labels: [("server", server), ("limit", limit.rawValue)])
        }
        registry.makeGauge(descriptor: Self.serverConnections, labels: [("server", server)]).set(to: Double(connections))
        registry.makeGauge(descriptor: Self.serverBuffered, labels: [("server", server)]).set(to: Double(bufferedRequestBytes))
    }

    /// A batch of the provider was polled and its results written at `time`.
    public func pollSucceeded(provider: String, at time: Timestamp) {
        registry.makeGauge(descriptor: Self.lastSuccessfulPoll, labels: [("provider", provider)]).set(to: time.secondsSinceEpoch)
    }

    /// The overdue machines of every provider the poller tracks machines
    /// of; a provider left out has no series any more.
    public func machinesOverdue(_ counts: [String: Int]) {
        overdueSeries.withLockedValue { series in
            for (provider, gauge) in series where counts[provider] == nil {
                registry.unregisterGauge(gauge)
                series.removeValue(forKey: provider)
            }
            for (provider, count) in counts {
                let gauge = series[provider] ?? registry.makeGauge(descriptor: Self.machinesOverdue, labels: [("provider", provider)])
                series[provider] = gauge
                gauge.set(to: Double(count))
            }
        }
    }

    /// The expiry of every stored credential that has one (never a
    /// credential's value); one removed or set without an expiry has no
    /// series any more.
    public func credentialExpiries(_ expiries: [(provider: String, credential: String, expiresAt: Timestamp)]) {
        expirySeries.withLockedValue { series in
            let wanted = Dictionary(expiries.map { (CredentialSeries(provider: $0.provider, credential: $0.credential), $0.expiresAt) }) { $1 }
            for (key, gauge) in series where wanted[key] == nil {
                registry.unregisterGauge(gauge)
                series.removeValue(forKey: key)
            }
            for (key, expiresAt) in wanted {
                let gauge = series[key]
                    ?? registry.makeGauge(descriptor: Self.credentialExpiry, labels: [("provider", key.provider), ("credential", key.credential)])
                series[key] = gauge
                gauge.set(to: expiresAt.secondsSinceEpoch)
            }
        }
    }

    /// A config load or reload ended at `time`: `successful` when it
    /// changed everything it asked for.
    public func configReloaded(successful: Bool, at time: Timestamp) {
        registry.makeGauge(descriptor: Self.configReloadSuccessful).set(to: successful ? 1 : 0)
        if successful { registry.makeGauge(descriptor: Self.configReloadTime).set(to: time.secondsSinceEpoch) }
    }

    private struct CredentialSeries: Hashable {
        var provider: String
        var credential: String
    }
}

extension Timestamp {
    /// Seconds since the Unix epoch, as Prometheus writes times.
    var secondsSinceEpoch: Double { Double(nanosecondsSinceEpoch) / 1e9 }
}
