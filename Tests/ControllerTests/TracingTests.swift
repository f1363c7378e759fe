@testable import Controller
import Core
import Foundation
import Logging
import OTel
@testable import ProviderShim
import Testing
import Tracing

/// Tracing's parts that need no process: the config's `tracing:` block,
/// the environment a shim is started with, and W3C trace context through
/// ttrpc request metadata (the controller's injector, the shim SDK's
/// extractor and server span). The whole path, controller to shim to cloud
/// HTTP, is Tests/SystemTests/TracingTests.swift.
@Suite("Tracing")
struct TracingTests {
    static func parse(_ tracing: String) throws -> ControllerConfig {
        try ControllerConfig.parse(
            "providers:\n  aws:\n    shim: {command: /bin/true}\n    cloud: {type: ec2}\n\(tracing)", file: "/etc/ip/config.yaml", environment: [:])
    }

    static func error(_ tracing: String) -> String {
        do {
            _ = try parse(tracing)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    @Test func noBlockIsOff() throws {
        #expect(try Self.parse("").tracing == nil)
    }

    @Test func aBlockWithDefaults() throws {
        let settings = try #require(try Self.parse("tracing:\n  endpoint: http://127.0.0.1:4318/v1/traces\n").tracing)
        #expect(settings.endpoint == "http://127.0.0.1:4318/v1/traces")
        #expect(settings.sampleRatio == 1)
        #expect(settings.serviceName == "instancepoller")
        #expect(settings.exportProtocol == .httpProtobuf)
        #expect(settings.exportDelay == .seconds(5))
    }

    @Test func everyKeySet() throws {
        let settings = try #require(try Self.parse("""
            tracing:
              endpoint: https://collector.example:4318/v1/traces
              sample_ratio: 0.25
              service_name: poller-eu
              protocol: http/json
              export_delay: 250ms

            """).tracing)
        #expect(settings.endpoint == "https://collector.example:4318/v1/traces")
        #expect(settings.sampleRatio == 0.25)
        #expect(settings.serviceName == "poller-eu")
        #expect(settings.exportProtocol == .httpJSON)
        #expect(settings.exportDelay == .milliseconds(250))
    }

    @Test func badValuesAreOneLineErrorsNamingTheKey() {
        let file = "/etc/ip/config.yaml"
        #expect(Self.error("tracing:\n  sample_ratio: 1\n") == "\(file):6:3: tracing: needs an endpoint: the OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces")
        #expect(Self.error("tracing:\n  endpoint: 127.0.0.1:4318\n")
            == "\(file):6:13: tracing.endpoint: expected an http:// or https:// URL, e.g. http://127.0.0.1:4318/v1/traces, not \"127.0.0.1:4318\"")
        #expect(Self.error("tracing:\n  endpoint: grpc://collector:4317\n").hasSuffix("tracing.endpoint: expected an http:// or https:// URL, e.g. http://127.0.0.1:4318/v1/traces, not \"grpc://collector:4317\""))
        let withPassword = Self.error("tracing:\n  endpoint: http://user:hunter2@collector:4318/v1/traces\n")
        #expect(withPassword == "\(file):6:13: tracing.endpoint: must not carry a user or password (the shims get it in their environment); use a collector that needs none")
        #expect(!Self.error("tracing:\n  endpoint: htp//user:hunter2@collector\n").contains("hunter2"), "a password is not quoted back")
        #expect(Self.error("tracing:\n  endpoint: http://c:4318\n  sample_ratio: 1.5\n") == "\(file):7:17: tracing.sample_ratio: must be from 0 to 1, not 1.5")
        #expect(Self.error("tracing:\n  endpoint: http://c:4318\n  sample_ratio: most\n") == "\(file):7:17: tracing.sample_ratio: expected a number")
        #expect(Self.error("tracing:\n  endpoint: http://c:4318\n  service_name: \"my poller\"\n")
            == "\(file):7:17: tracing.service_name: must be 1 to 128 printable ASCII characters without spaces")
        #expect(Self.error("tracing:\n  endpoint: http://c:4318\n  protocol: grpc\n")
            == "\(file):7:13: tracing.protocol: unknown value \"grpc\" (expected one of: http/protobuf, http/json)")
        #expect(Self.error("tracing:\n  endpoint: http://c:4318\n  export_delay: 0s\n") == "\(file):7:17: tracing.export_delay: must be more than zero")
        #expect(Self.error("tracing:\n  endpoint: http://c:4318\n  export_delay: 2h\n") == "\(file):7:17: tracing.export_delay: must be from 1ms to 1h")
        #expect(Self.error("tracing:\n  endpoint: http://c:4318\n  headers: {a: b}\n")
            == "\(file):7:3: tracing: unknown key \"headers\" (expected one of: endpoint, sample_ratio, service_name, protocol, export_delay)")
        #expect(Self.error("tracing: on\n") == "\(file):5:10: tracing: expected a mapping with keys endpoint, sample_ratio, service_name, protocol, export_delay")
    }

    /// A shim is started with the standard OTLP variables (no secret among
    /// them), named after its provider; with tracing off, with none.
    @Test func shimsGetTheOTLPSettingsAsStandardVariables() throws {
        var settings = TracingSettings(endpoint: "http://127.0.0.1:4318/v1/traces")
        settings.sampleRatio = 0.5
        settings.exportProtocol = .httpJSON
        settings.exportDelay = .milliseconds(1500)
        #expect(settings.shimEnvironment(provider: "aws") == [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
            "OTEL_SERVICE_NAME": "instancepoller-shim-aws",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.5",
            "OTEL_BSP_SCHEDULE_DELAY": "1500",
        ])
        // This test process never starts the controller's tracing.
        #expect(ControllerTracing.tracer == nil)
        let command = ShimCommand(executable: "/bin/true", environment: ["HTTPS_PROXY": "http://proxy:3128"])
        #expect(command.withTracing(provider: "aws") == command)
    }

    /// An OTel tracer that exports nowhere, sampling every trace.
    static func tracer() throws -> any Tracer {
        var configuration = OTel.Configuration.default
        configuration.traces.exporter = .none
        configuration.traces.sampler = .alwaysOn
        configuration.diagnosticLogger = .custom(.init(label: "otel") { _ in SwiftLogNoOpLogHandler() })
        return try OTel.makeTracingBackend(configuration: configuration).factory
    }

    /// `00-<trace id>-<span id>-<flags>`, split.
    static func traceparent(_ metadata: Metadata) throws -> (trace: String, span: String, flags: String) {
        let value = try #require(metadata.first("traceparent"), "a traceparent in \(metadata)")
        let parts = value.split(separator: "-").map(String.init)
        try #require(parts.count == 4 && parts[0] == "00" && parts[1].count == 32 && parts[2].count == 16, "\(value)")
        #expect(parts[1] != String(repeating: "0", count: 32))
        return (parts[1], parts[2], parts[3])
    }

    /// The trace context the code running now would pass on.
    static func current(_ tracer: any Tracer) -> Metadata {
        var metadata = Metadata()
        tracer.inject(ServiceContext.current ?? .topLevel, into: &metadata, using: MetadataInjector())
        return metadata
    }

    static let instancesCall = RPCServerContext(service: ProviderV1.instances.service, method: ProviderV1.instances.method)

    /// The controller's injector writes `traceparent` into the request
    /// metadata; the shim SDK's extractor reads it back, and its server
    /// span continues that trace as a child of the caller's span.
    @Test func traceContextRoundTripsThroughRequestMetadata() async throws {
        let tracer = try Self.tracer()
        var sent = Metadata()
        sent.append("request-id", "r1")
        tracer.withSpan("client", ofKind: .client) { span in
            tracer.inject(span.context, into: &sent, using: MetadataInjector())
        }
        #expect(sent.map(\.key) == ["request-id", "traceparent"], "one lower-case key besides what was there")
        let caller = try Self.traceparent(sent)
        #expect(caller.flags == "01", "sampled")
        #expect(MetadataExtractor().extract(key: "traceparent", from: sent) == sent.first("traceparent"))
        #expect(MetadataExtractor().extract(key: "traceparent", from: ["TraceParent": "x"]) == "x", "W3C names are case-insensitive")

        var context = Self.instancesCall
        context.metadata = sent
        var inside = Metadata()
        _ = try await ShimTracing.serve(ProviderV1.instances, context, tracer: tracer) {
            inside = Self.current(tracer)
            return ProviderV1.InstancesResponse()
        }
        let server = try Self.traceparent(inside)
        #expect(server.trace == caller.trace, "the shim's span continues the caller's trace")
        #expect(server.span != caller.span, "in a span of its own")
        #expect(server.flags == "01")
    }

    /// Without `traceparent` the shim's span starts a trace of its own:
    /// never a child of whatever the serving task carries.
    @Test func aRequestWithoutTraceparentStartsANewTrace() async throws {
        let tracer = try Self.tracer()
        let (outer, server) = try await tracer.withSpan("unrelated") { _ in
            let outer = try Self.traceparent(Self.current(tracer))
            var inside = Metadata()
            _ = try await ShimTracing.serve(ProviderV1.instances, Self.instancesCall, tracer: tracer) {
                inside = Self.current(tracer)
                return ProviderV1.InstancesResponse()
            }
            return (outer, try Self.traceparent(inside))
        }
        #expect(server.trace != outer.trace, "a new trace")
    }

    /// A handler's error is the call's answer, traced or not.
    @Test func aFailingHandlerStillFailsTheCall() async throws {
        let tracer = try Self.tracer()
        await #expect(throws: RPCError.self) {
            try await ShimTracing.serve(ProviderV1.instances, Self.instancesCall, tracer: tracer) { () async throws -> ProviderV1.InstancesResponse in
                throw RPCError(.unauthenticated, "the credential was refused")
            }
        }
    }
}
