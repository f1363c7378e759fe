import Controller
import Core
import Foundation
import Testing
import TestSupport

/// Tracing end to end with the real binaries and an OTLP/HTTP collector on
/// loopback (``OTLPCollector``). Each shim is started through `/bin/sh`,
/// which writes the environment the controller gave it to a file and
/// execs `provider-shim`: what a shim gets is read, not guessed.
enum TracingSystem {
    /// A provider whose shim is `provider-shim ARGS…`, its environment
    /// written to `environmentFile` first.
    static func provider(_ name: String, type: String, arguments: [String], environmentFile: String, cloud: String = "") -> String {
        let script = "env > \(environmentFile); exec \(BuiltProducts.path(of: "provider-shim")) \"$@\""
        let args = (["-c", script, "sh"] + arguments).map { "\"\($0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\""))\"" }
        return """
              \(name):
                shim:
                  command: /bin/sh
                  args: [\(args.joined(separator: ", "))]
                cloud:
                  type: \(type)
            \(cloud)
            """
    }

    /// The `NAME=value` lines of a shim's environment file.
    static func environment(_ path: String) throws -> [String: String] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            result[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return result
    }

    /// The parent chain of `provider`'s Instances call: the controller's
    /// batch span, its client span for the call, and the shim's server span
    /// for it, all in one trace; nil until all three arrived.
    static func instancesChain(_ spans: [OTLPCollector.Span], provider: String, service: String)
        -> (batch: OTLPCollector.Span, call: OTLPCollector.Span, server: OTLPCollector.Span)?
    {
        let method = "instancepoller.provider.v1.Provider/Instances"
        for batch in spans where batch.service == service && batch.name == "poll batch" && batch.attributes["instancepoller.provider"] == provider {
            for call in spans where call.service == service && call.name == method && call.kind == OTLPCollector.Span.clientKind
                && call.parentID == batch.spanID && call.traceID == batch.traceID
            {
                if let server = spans.first(where: {
                    $0.service == "\(service)-shim-\(provider)" && $0.name == method && $0.kind == OTLPCollector.Span.serverKind
                        && $0.parentID == call.spanID && $0.traceID == call.traceID
                }) {
                    return (batch, call, server)
                }
            }
        }
        return nil
    }

    /// ``instancesChain(_:provider:service:)`` and the shim's HTTP request
    /// (a POST to EC2) under its server span: batch, call, server, request.
    static func httpChain(_ spans: [OTLPCollector.Span], provider: String, service: String) -> [OTLPCollector.Span]? {
        guard let chain = instancesChain(spans, provider: provider, service: service) else { return nil }
        let server = chain.server
        let request = spans.first { span in
            span.service == "\(service)-shim-\(provider)" && span.name == "POST" && span.kind == OTLPCollector.Span.clientKind
                && span.parentID == server.spanID && span.traceID == server.traceID
        }
        guard let request else { return nil }
        return [chain.batch, chain.call, server, request]
    }
}

extension EC2Tests {
    /// One trace id from the controller's batch through its provider call
    /// and the ec2 shim's server span to the shim's HTTP request to EC2
    /// (moto); the fake shim continues the trace too. Shims get the OTLP
    /// settings as OTEL_* variables; the controller's own OTEL_* variables
    /// change nothing (the config says it all). In the EC2 suite, whose
    /// tests take turns on one moto.
    @Test func oneTraceSpansControllerShimAndCloudRequest() async throws {
        let moto = try await Self.moto.value
        let truth = moto.truth
        let collector = try await OTLPCollector.start()
        defer { collector.close() }
        let h = try ControllerHarness()
        defer { h.remove() }
        let awsEnvironment = h.directory.file("aws.env")
        let demoEnvironment = h.directory.file("demo.env")
        let scenario = try h.scenario("demo", ControllerHarness.runningInstances([("i-demo", "10.0.0.9")]))
        let providers = [
            TracingSystem.provider(
                "aws", type: "ec2", arguments: ["ec2"], environmentFile: awsEnvironment,
                cloud: "      region: \(truth.region)\n      endpoint: \(moto.endpoint)"),
            TracingSystem.provider("demo", type: "fake", arguments: ["fake", "--scenario", scenario], environmentFile: demoEnvironment),
        ]
        let tracing = """
            tracing:
              endpoint: \(collector.endpoint)
              protocol: http/json
              service_name: ip-test
              export_delay: 100ms
            """
        try h.writeConfig(providers: providers, settings: ControllerHarness.fastSettings + "\n" + tracing)
        let controller = try await h.start(environment: ProcessInfo.processInfo.environment.merging([
            "OTEL_SERVICE_NAME": "from-the-environment", "OTEL_SDK_DISABLED": "true", "OTEL_TRACES_SAMPLER": "always_off",
        ]) { $1 })
        let keys = h.directory.file("aws.yaml")
        FileManager.default.createFile(
            atPath: keys, contents: Data("access-key: \(truth.poller.access_key)\nsecret-key: \(truth.poller.secret_key)\n".utf8),
            attributes: [.posixPermissions: 0o600])
        #expect(try await h.cli(["credentials", "set", "aws", "main", "--auth-type", "access-key", "--file", keys]).status == 0)

        let (instance, expected) = try #require(truth.instances.sorted { $0.key < $1.key }.first { $0.value.state == "running" })
        try await h.add("m-aws", provider: "aws", instance: instance)
        try await h.add("m-demo", provider: "demo", instance: "i-demo")
        try await h.waitForMachines("both machines polled", .seconds(60)) { machines in
            machines["m-aws"]?.instanceStatus.rawStatus == expected.state && machines["m-demo"]?.instanceStatus.rawStatus == "running"
        }

        let chain = try await collector.waitFor("controller → ec2 shim → HTTP spans in one trace") { spans -> [OTLPCollector.Span]? in
            TracingSystem.httpChain(spans, provider: "aws", service: "ip-test")
        }
        let batch = chain[0], call = chain[1], server = chain[2], request = chain[3]
        let traceIDs: Set<String> = [batch.traceID, call.traceID, server.traceID, request.traceID]
        #expect(traceIDs.count == 1, "one trace id")
        #expect(batch.parentID.isEmpty, "the batch starts the trace")
        #expect(batch.kind == OTLPCollector.Span.internalKind)
        #expect(batch.attributes["instancepoller.machines"] == "1")
        #expect(batch.attributes["instancepoller.result"] == "ok")
        #expect(call.attributes["rpc.system"] == "ttrpc")
        #expect(call.attributes["rpc.service"] == "instancepoller.provider.v1.Provider")
        #expect(call.attributes["rpc.method"] == "Instances")
        #expect(call.attributes["rpc.ttrpc.status_code"] == "0")
        #expect(call.attributes["instancepoller.instance_ids"] == "1")
        #expect(server.attributes["rpc.method"] == "Instances")
        #expect(server.attributes["rpc.ttrpc.status_code"] == "0")
        #expect(request.attributes["http.request.method"] == "POST" || request.attributes["http.method"] == "POST", "\(request)")

        // The fake shim continues the trace as well (it makes no HTTP request).
        let demo = try await collector.waitFor("controller → fake shim spans in one trace") { spans -> OTLPCollector.Span? in
            TracingSystem.instancesChain(spans, provider: "demo", service: "ip-test")?.server
        }
        #expect(demo.attributes["rpc.system"] == "ttrpc")

        let shimEnvironment = try TracingSystem.environment(awsEnvironment)
        #expect(shimEnvironment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == collector.endpoint)
        #expect(shimEnvironment["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/json")
        #expect(shimEnvironment["OTEL_SERVICE_NAME"] == "ip-test-shim-aws")
        #expect(shimEnvironment["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio")
        #expect(shimEnvironment["OTEL_TRACES_SAMPLER_ARG"] == "1.0")
        #expect(shimEnvironment["OTEL_BSP_SCHEDULE_DELAY"] == "100")
        #expect(shimEnvironment["OTEL_SDK_DISABLED"] == nil, "the controller's own OTEL_* variables are not passed on")
        #expect(try TracingSystem.environment(demoEnvironment)["OTEL_SERVICE_NAME"] == "ip-test-shim-demo")
        #expect(!collector.spans.contains { $0.service == "from-the-environment" }, "the config names the controller's service")
        #expect(collector.contentTypes == ["application/json"])
        #expect(collector.unreadable.isEmpty, "\(collector.unreadable)")

        #expect(try await h.stop(controller) == 0)
        let log = try await controller.output().stderr
        #expect(!log.contains(truth.poller.secret_key), "a secret reached the controller's log")
        #expect(!collector.spans.contains { $0.attributes.values.contains { $0.contains(truth.poller.secret_key) } }, "a secret in a span")
    }
}

/// Without a `tracing:` block nothing is exported, by the controller or by
/// its shims, even with OTEL_* variables in the controller's environment,
/// and shims are started without any.
@Suite("Tracing off")
struct TracingOffTests {
    @Test func noBlockExportsNothingAndShimsGetNoOTELVariables() async throws {
        let collector = try await OTLPCollector.start()
        defer { collector.close() }
        let h = try ControllerHarness()
        defer { h.remove() }
        let environmentFile = h.directory.file("demo.env")
        let scenario = try h.scenario("demo", ControllerHarness.runningInstances([("i-demo", "10.0.0.9")]))
        try h.writeConfig(providers: [
            TracingSystem.provider("demo", type: "fake", arguments: ["fake", "--scenario", scenario], environmentFile: environmentFile)
        ])
        let controller = try await h.start(environment: ProcessInfo.processInfo.environment.merging([
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:\(collector.port)",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json", "OTEL_BSP_SCHEDULE_DELAY": "10",
        ]) { $1 })
        try await h.add("m-demo", provider: "demo", instance: "i-demo")
        try await h.waitForMachines("the machine polled") { $0["m-demo"]?.instanceStatus.rawStatus == "running" }
        let shimEnvironment = try TracingSystem.environment(environmentFile)
        #expect(!shimEnvironment.keys.contains { $0.hasPrefix("OTEL_") }, "\(shimEnvironment.keys.sorted())")
        #expect(!controller.stderrLines.lines.contains { $0.contains("tracing on") })
        // The controller waits for its shims to exit: whatever either would
        // have sent at the stop has been sent by then.
        #expect(try await h.stop(controller) == 0)
        #expect(collector.requests == 0, "exported: \(collector.spans)")
    }
}
