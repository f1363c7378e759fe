public import Core
public import Logging
internal import NIOConcurrencyHelpers
internal import OTel
public import ServiceLifecycle
public import Tracing

/// A shim's tracing, on when the controller starts it with the OTLP
/// settings of its `tracing:` block (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
/// `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, … — the standard variables,
/// none of them a secret) and off otherwise. On, each cloud call
/// (ValidateCredential, Instances, NetworkInterfaces) is a server span that
/// continues the controller's trace from the request's `traceparent`
/// metadata (proto/PROTOCOL.md, "Trace context"), and a backend that gives
/// ``tracer`` to its HTTP client makes each cloud request a child span.
/// ``ShimProcess`` starts it and sends the spans left when the shim stops.
public enum ShimTracing {
    private struct State: Sendable {
        var tracer: any Tracer
        /// Taken by the one that runs it (``ShimProcess``).
        var service: (any Service)?
    }

    private static let state = NIOLockedValueBox<State?>(nil)

    /// The variable whose presence turns tracing on.
    public static let endpointVariables = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]

    /// A bad `OTEL_*` setting, in one line.
    public struct SetupError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Bootstraps swift-otel's tracer from the `OTEL_*` variables of
    /// `environment` when one of ``endpointVariables`` is set; nothing
    /// otherwise. Once on, later calls do nothing.
    ///
    /// - Throws: ``SetupError`` when swift-otel refuses the settings.
    public static func startIfConfigured(environment: [String: String], logger: Logger) throws(SetupError) {
        guard endpointVariables.contains(where: { environment[$0]?.isEmpty == false }) else { return }
        let started = state.withLockedValue { state -> Result<Void, SetupError> in
            guard state == nil else { return .success(()) }
            var configuration = OTel.Configuration.default
            configuration.diagnosticLogger = .custom(logger)
            configuration.diagnosticLogLevel = .warning
            configuration.logs.enabled = false
            configuration.metrics.enabled = false
            configuration.propagators = [.traceContext]
            do {
                let service = try OTel.bootstrap(configuration: configuration, environment: environment)
                state = State(tracer: InstrumentationSystem.tracer, service: service)
                return .success(())
            } catch {
                return .failure(SetupError(description: "tracing: \(error)"))
            }
        }
        try started.get()
        logger.debug("tracing on", metadata: ["service_name": "\(environment["OTEL_SERVICE_NAME"] ?? "")"])
    }

    /// The tracer, or nil while tracing is off.
    public static var tracer: (any Tracer)? { state.withLockedValue { $0?.tracer } }

    /// The service that exports the spans, once: its runner stops it last,
    /// so that the spans left are sent.
    static func takeService() -> (any Service)? {
        state.withLockedValue { state -> (any Service)? in
            defer { state?.service = nil }
            return state?.service
        }
    }

    /// Runs a call's handler; with tracing on, inside a server span named
    /// after the method that continues the trace in the request metadata,
    /// or starts a new trace when there is none (never the task's own).
    /// Attributes: `rpc.system` (`ttrpc`), `rpc.service`, `rpc.method`,
    /// `rpc.ttrpc.status_code`.
    public static func serve<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ context: RPCServerContext,
        _ handler: () async throws -> Response
    ) async throws -> Response {
        guard let tracer else { return try await handler() }
        return try await serve(method, context, tracer: tracer, handler)
    }

    static func serve<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ context: RPCServerContext,
        tracer: any Tracer,
        _ handler: () async throws -> Response
    ) async throws -> Response {
        var parent = ServiceContext.topLevel
        tracer.extract(context.metadata, into: &parent, using: MetadataExtractor())
        return try await tracer.withSpan(method.fullName, context: parent, ofKind: .server) { span in
            span.attributes["rpc.system"] = "ttrpc"
            span.attributes["rpc.service"] = method.service
            span.attributes["rpc.method"] = method.method
            do {
                let response = try await handler()
                span.attributes["rpc.ttrpc.status_code"] = Int(RPCStatusCode.ok.rawValue)
                return response
            } catch {
                let code = RPCError(from: error).code
                span.attributes["rpc.ttrpc.status_code"] = Int(code.rawValue)
                span.setStatus(SpanStatus(code: .error, message: "\(code)"))
                throw error
            }
        }
    }
}

/// Reads trace context from ttrpc request metadata: the first value of a
/// key, matched without regard to case (W3C header names are
/// case-insensitive; the controller sends `traceparent` in lower case).
public struct MetadataExtractor: Extractor {
    public init() {}

    public func extract(key: String, from carrier: Metadata) -> String? {
        let key = key.lowercased()
        return carrier.first { $0.key.lowercased() == key }?.value
    }
}
