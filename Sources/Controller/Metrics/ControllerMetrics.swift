public import Prometheus
internal import NIOConcurrencyHelpers

/// The controller's Prometheus metrics (docs/DESIGN.md §8), in one registry that the
/// metrics endpoint serves. Labels never carry a secret: provider and
/// credential *names*, method names and result codes only.
///
/// | metric | labels |
/// |---|---|
/// | `instancepoller_polls_total` | provider, result (ok, error, credential_invalid, throttled, shim_down) |
/// | `instancepoller_provider_calls_total` | provider, method, result (ok or the status code, or shim_down) |
/// | `instancepoller_provider_call_duration_seconds` | provider, method (histogram) |
/// | `instancepoller_batch_size_machines` | provider (histogram) |
/// | `instancepoller_machines` | group (short, long) |
/// | `instancepoller_credential_valid` | provider, credential (1 usable, 0 invalid) |
/// | `instancepoller_shim_up` | provider (1 serving, 0 down) |
/// | `instancepoller_shim_restarts_total` | provider |
/// | `instancepoller_server_connections` | server (control, metrics) |
/// | `instancepoller_server_buffered_request_bytes` | server |
/// | `instancepoller_server_limit_hits_total` | server, limit (connections, idle_timeout, frame_timeout, request_memory, backpressure, peer, header_timeout, header_size, unauthorized) |
public final class ControllerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let scrapeHooks = NIOLockedValueBox<[@Sendable () -> Void]>([])

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
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
    static var batchSize: MetricNameDescriptor { name("batch_size", "machines", "Machines per polled batch.") }
    static var machines: MetricNameDescriptor { name("machines", "", "Machines tracked per poll group.") }
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

    public func credential(provider: String, name: String, valid: Bool) {
        registry.makeGauge(descriptor: Self.credentialValid, labels: [("provider", provider), ("credential", name)]).set(to: valid ? 1.0 : 0.0)
    }

    public func shim(provider: String, up: Bool) {
        registry.makeGauge(descriptor: Self.shimUp, labels: [("provider", provider)]).set(to: up ? 1.0 : 0.0)
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
        registry.makeGauge(descriptor: Self.serverConnections, labels: [("server", server)]).set(to: Double(connections))
        registry.makeGauge(descriptor: Self.serverBuffered, labels: [("server", server)]).set(to: Double(bufferedRequestBytes))
    }
}
