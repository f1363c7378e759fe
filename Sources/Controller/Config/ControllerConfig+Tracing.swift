internal import Foundation
internal import Yams
internal import Support

/// The config's `tracing:` block: where spans go over OTLP/HTTP, which
/// share of new traces is kept, and the name the controller's spans carry.
/// Absent, tracing is off: no exporter runs and no trace context is sent to
/// the shims (docs/DESIGN.md, "Tracing").
public struct TracingSettings: Hashable, Sendable {
    /// How spans are encoded on the wire (OTLP's `protocol`).
    public enum ExportProtocol: String, Hashable, Sendable, CaseIterable {
        case httpProtobuf = "http/protobuf"
        case httpJSON = "http/json"
    }

    /// The OTLP/HTTP traces URL, used as it is, e.g.
    /// `http://127.0.0.1:4318/v1/traces`.
    public var endpoint: String
    /// The share of new traces kept, 0 to 1; a shim's spans follow the
    /// controller's decision for the trace they continue.
    public var sampleRatio: Double = 1
    /// `service.name` of the controller's spans; a shim's are
    /// `<service_name>-shim-<provider>`.
    public var serviceName: String = "instancepoller"
    public var exportProtocol: ExportProtocol = .httpProtobuf
    /// The longest a finished span waits before it is sent (OTel's batch
    /// span processor schedule delay); spans are sent at a stop too.
    public var exportDelay: Duration = .seconds(5)

    public init(endpoint: String) {
        self.endpoint = endpoint
    }

    /// The OTLP settings a shim of `provider` is started with, as the
    /// standard `OTEL_*` variables: none of them is a secret (an endpoint
    /// with a user or password is refused when the config is read).
    public func shimEnvironment(provider: String) -> [String: String] {
        [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": exportProtocol.rawValue,
            "OTEL_SERVICE_NAME": "\(serviceName)-shim-\(provider)",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "\(sampleRatio)",
            "OTEL_BSP_SCHEDULE_DELAY": "\(Self.milliseconds(exportDelay))",
        ]
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

extension YAMLReader {
    /// A `tracing:` block; every problem names its key.
    func tracing(_ node: Node) throws(YAMLFileError) -> TracingSettings {
        let fields = try mapping(node, "tracing", allowed: ["endpoint", "sample_ratio", "service_name", "protocol", "export_delay"])
        guard let endpointNode = fields["endpoint"] else {
            throw fail(node, "tracing", "needs an endpoint: the OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces")
        }
        let endpoint = try string(endpointNode, "tracing.endpoint")
        if let problem = Self.endpointProblem(endpoint) { throw fail(endpointNode, "tracing.endpoint", problem) }
        var settings = TracingSettings(endpoint: endpoint)
        if let ratioNode = fields["sample_ratio"] {
            let ratio = try number(ratioNode, "tracing.sample_ratio")
            guard (0...1).contains(ratio) else { throw fail(ratioNode, "tracing.sample_ratio", "must be from 0 to 1, not \(ratio)") }
            settings.sampleRatio = ratio
        }
        if let nameNode = fields["service_name"] {
            let name = try string(nameNode, "tracing.service_name")
            guard !name.isEmpty, name.count <= 128, name.allSatisfy({ $0.isASCII && !$0.isWhitespace && !$0.isNewline }) else {
                throw fail(nameNode, "tracing.service_name", "must be 1 to 128 printable ASCII characters without spaces")
            }
            settings.serviceName = name
        }
        if let protocolNode = fields["protocol"] {
            settings.exportProtocol = try choice(
                protocolNode, "tracing.protocol", TracingSettings.ExportProtocol.allCases.map { ($0.rawValue, $0) })
        }
        if let delayNode = fields["export_delay"] {
            let delay = try positiveDuration(delayNode, "tracing.export_delay")
            guard delay >= .milliseconds(1), delay <= .seconds(3600) else {
                throw fail(delayNode, "tracing.export_delay", "must be from 1ms to 1h")
            }
            settings.exportDelay = delay
        }
        return settings
    }

    /// What is wrong with an OTLP endpoint, or nil: an absolute http(s)
    /// URL with a host, and no user or password (it is passed to the shims
    /// in their environment, where no secret may travel).
    static func endpointProblem(_ text: String) -> String? {
        let example = "e.g. http://127.0.0.1:4318/v1/traces"
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = url.host, !host.isEmpty
        else {
            // Not quoted when it may hold a password.
            let quoted = text.contains("@") ? "" : ", not \"\(TextEscaping.oneLine(text))\""
            return "expected an http:// or https:// URL, \(example)\(quoted)"
        }
        if url.user != nil || url.password != nil {
            return "must not carry a user or password (the shims get it in their environment); use a collector that needs none"
        }
        return nil
    }
}
