public import Core
public import Logging
internal import NIOConcurrencyHelpers
internal import OTel
public import ServiceLifecycle
public import Tracing

/// The controller's tracing (the config's `tracing:` block): off until
/// ``start(_:logger:)`` is given settings, and then on for the life of the
/// process. On, the poll engine wraps each batch in a span, ``ProviderClient``
/// makes each cloud call a client span and sends its W3C trace context to
/// the shim in the request metadata (``MetadataInjector``), and shims are
/// started with the matching OTLP settings (``shimEnvironment(provider:)``).
/// Off, none of this happens: every use is one look at ``tracer``.
public enum ControllerTracing {
    private struct State: Sendable {
        var tracer: any Tracer
        var settings: TracingSettings
    }

    private static let state = NIOLockedValueBox<State?>(nil)

    /// A second start in one process (the tracer is process-wide).
    public struct AlreadyStarted: Error, CustomStringConvertible {
        public var description: String { "tracing was already started in this process" }
    }

    /// Bootstraps swift-otel's tracer with `settings` (nil: tracing stays
    /// off and nothing runs) and returns the service that exports the
    /// spans; run it in the controller's service group, stopped last, so
    /// that spans are sent at a stop. No `OTEL_*` variable of the
    /// controller's environment applies: the config says it all.
    ///
    /// - Throws: ``AlreadyStarted``, or swift-otel's configuration error.
    public static func start(_ settings: TracingSettings?, logger: Logger) throws -> (any Service)? {
        guard let settings else { return nil }
        guard state.withLockedValue({ $0 == nil }) else { throw AlreadyStarted() }
        var configuration = OTel.Configuration.default
        configuration.serviceName = settings.serviceName
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.propagators = [.traceContext]
        configuration.traces.enabled = true
        configuration.traces.exporter = .otlp
        configuration.traces.otlpExporter.endpoint = settings.endpoint
        configuration.traces.otlpExporter.protocol = settings.exportProtocol == .httpJSON ? .httpJSON : .httpProtobuf
        configuration.traces.batchSpanProcessor.scheduleDelay = settings.exportDelay
        configuration.traces.sampler = .parentBasedTraceIDRatio(ratio: settings.sampleRatio) ?? .parentBasedAlwaysOn
        let service = try OTel.bootstrap(configuration: configuration, environment: [:])
        state.withLockedValue { $0 = State(tracer: InstrumentationSystem.tracer, settings: settings) }
        logger.info(
            "tracing on",
            metadata: [
                "endpoint": "\(settings.endpoint)", "protocol": "\(settings.exportProtocol.rawValue)",
                "sample_ratio": "\(settings.sampleRatio)", "service_name": "\(settings.serviceName)",
            ])
        return service
    }

    /// The tracer, or nil while tracing is off.
    public static var tracer: (any Tracer)? { state.withLockedValue { $0?.tracer } }

    /// The settings in force, or nil while tracing is off.
    public static var settings: TracingSettings? { state.withLockedValue { $0?.settings } }

    /// The `OTEL_*` variables a shim of `provider` gets besides its
    /// allowlist: none while tracing is off.
    public static func shimEnvironment(provider: String) -> [String: String] {
        settings?.shimEnvironment(provider: provider) ?? [:]
    }
}

/// Writes trace context into ttrpc request metadata: one entry per key
/// (`traceparent`, `tracestate`), replacing any earlier one
/// (proto/PROTOCOL.md, "Trace context").
public struct MetadataInjector: Injector {
    public init() {}

    public func inject(_ value: String, forKey key: String, into carrier: inout Metadata) {
        let key = key.lowercased()
        carrier.removeAll(key)
        carrier.append(key, value)
    }
}

extension ShimCommand {
    /// This command with the tracing environment for `provider` added (the
    /// same command while tracing is off).
    func withTracing(provider: String) -> ShimCommand {
        let extra = ControllerTracing.shimEnvironment(provider: provider)
        guard !extra.isEmpty else { return self }
        var command = self
        command.environment.merge(extra) { _, tracing in tracing }
        return command
    }
}
