public import Core
internal import Foundation
internal import Yams
internal import Support
#if canImport(Glibc)
internal import Glibc
#endif

/// The `limits:` section: what local clients of the control socket and the
/// metrics endpoint may hold (connections, time, memory, calls). See the
/// README's "Limits" section.
public struct LimitSettings: Hashable, Sendable {
    /// Open connections to the control socket.
    public var controlConnections = 256
    /// Open connections to the metrics endpoint.
    public var metricsConnections = 64
    /// A connection with no call in flight and no bytes for this long is closed.
    public var idleTimeout: Duration = .seconds(300)
    /// A ttrpc frame must be complete this soon after its first byte.
    public var frameTimeout: Duration = .seconds(10)
    /// A metrics request head must be complete this soon after connecting.
    public var headerTimeout: Duration = .seconds(5)
    /// The most bytes of a metrics request head.
    public var headerSize = 8192
    /// Calls one control connection may have in flight before the
    /// controller stops reading from it.
    public var requestsPerConnection = 128
    /// Request bytes buffered across all control connections.
    public var requestMemory = 64 * 1024 * 1024

    public init() {}

    /// The control server's limits.
    public var control: ServerLimits {
        ServerLimits(
            maxConnections: controlConnections, idleTimeout: idleTimeout, frameTimeout: frameTimeout,
            requestsPerConnection: requestsPerConnection, bufferedRequestMemory: requestMemory
        )
    }

    /// The metrics server's limits.
    public var metrics: MetricsServer.Limits {
        MetricsServer.Limits(
            maxConnections: metricsConnections, idleTimeout: idleTimeout, headerTimeout: headerTimeout, maxHeaderBytes: headerSize
        )
    }
}

extension YAMLReader {
    func limits(_ node: Node) throws(YAMLFileError) -> LimitSettings {
        let fields = try mapping(node, "limits", allowed: [
            "control_connections", "metrics_connections", "idle_timeout", "frame_timeout", "header_timeout", "header_size",
            "requests_per_connection", "request_memory",
        ])
        var settings = LimitSettings()
        if let node = fields["control_connections"] {
            settings.controlConnections = try count(node, "limits.control_connections", 1...1_000_000)
        }
        if let node = fields["metrics_connections"] {
            settings.metricsConnections = try count(node, "limits.metrics_connections", 1...1_000_000)
        }
        if let node = fields["idle_timeout"] { settings.idleTimeout = try positiveDuration(node, "limits.idle_timeout") }
        if let node = fields["frame_timeout"] { settings.frameTimeout = try positiveDuration(node, "limits.frame_timeout") }
        if let node = fields["header_timeout"] { settings.headerTimeout = try positiveDuration(node, "limits.header_timeout") }
        if let node = fields["header_size"] {
            settings.headerSize = try byteSize(node, "limits.header_size", 256...(1 << 20))
        }
        if let node = fields["requests_per_connection"] {
            settings.requestsPerConnection = try count(node, "limits.requests_per_connection", 1...100_000)
        }
        if let node = fields["request_memory"] {
            // At least one whole frame (4 MiB) must fit.
            settings.requestMemory = try byteSize(node, "limits.request_memory", (FrameHeader.size + FrameHeader.maxDataLength)...(1 << 40))
        }
        return settings
    }

    func count(_ node: Node, _ place: String, _ range: ClosedRange<Int>) throws(YAMLFileError) -> Int {
        let value = try unsigned(node, place)
        guard value <= UInt64(range.upperBound), range.contains(Int(value)) else {
            throw fail(node, place, "must be from \(range.lowerBound) to \(range.upperBound)")
        }
        return Int(value)
    }

    /// "8192", "64KiB", "64MiB", "1GiB" (also KB/MB/GB as powers of 1024).
    func byteSize(_ node: Node, _ place: String, _ range: ClosedRange<Int>) throws(YAMLFileError) -> Int {
        let text = try string(node, place).trimmingCharacters(in: .whitespaces)
        let units: [(String, UInt64)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("B", 1),
        ]
        var number = text
        var scale: UInt64 = 1
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            number = String(text.dropLast(suffix.count)).trimmingCharacters(in: .whitespaces)
            scale = factor
            break
        }
        guard let value = UInt64(number), value.multipliedReportingOverflow(by: scale).overflow == false else {
            throw fail(node, place, "expected a size such as 8192, 64KiB or 64MiB, not \"\(text)\"")
        }
        let bytes = value * scale
        guard bytes <= UInt64(range.upperBound), range.contains(Int(bytes)) else {
            throw fail(node, place, "must be from \(range.lowerBound) to \(range.upperBound) bytes")
        }
        return Int(bytes)
    }

    /// `metrics.bearer_token_file`: a file of this user's, 0600 or stricter,
    /// holding one token. Errors never quote its content.
    func bearerToken(_ node: Node, _ place: String) throws(YAMLFileError) -> (path: String, token: MetricsBearerToken) {
        let path = try self.path(node, place)
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw fail(node, place, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else { throw fail(node, place, "\(path) is not a regular file") }
        guard info.st_mode & 0o077 == 0 else {
            throw fail(node, place, "\(path) is readable by others (mode \(String(info.st_mode & 0o777, radix: 8))); chmod 600 it")
        }
        guard info.st_uid == getuid() else {
            throw fail(node, place, "\(path) belongs to uid \(info.st_uid), not to this user")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw fail(node, place, "cannot read \(path)")
        }
        guard let text = String(data: data, encoding: .utf8), let token = MetricsBearerToken(text) else {
            throw fail(node, place, "\(path) must hold one token: a single line without spaces")
        }
        return (path, token)
    }
}
