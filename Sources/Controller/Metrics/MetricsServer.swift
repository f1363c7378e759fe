public import Logging
internal import NIOCore
internal import NIOHTTP1
internal import NIOPosix

/// Serves ``ControllerMetrics`` in the Prometheus text format at
/// `GET /metrics` on a loopback address (opt-in: `metrics.address` in the
/// config). Anything else is 404; only GET and HEAD are answered.
public final class MetricsServer: Sendable {
    private let channel: any Channel
    /// The bound address, e.g. "127.0.0.1:9464" (port 0 in the config picks a free one).
    public let address: String

    public struct Unusable: Error, CustomStringConvertible {
        public var description: String
    }

    /// Binds `host:port`; the host must be a loopback address.
    public static func bind(host: String, port: Int, metrics: ControllerMetrics, logger: Logger) async throws -> MetricsServer {
        guard MetricsAddress.isLoopback(host) else {
            throw Unusable(description: "metrics address \(host) is not a loopback address (use 127.0.0.1 or ::1)")
        }
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHandler(metrics: metrics))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw Unusable(description: "cannot serve metrics on \(host):\(port): \(error)")
        }
        let bound = channel.localAddress
        let address = "\(bound?.ipAddress ?? host):\(bound?.port ?? port)"
        logger.info("serving metrics", metadata: ["address": "http://\(address)/metrics"])
        return MetricsServer(channel: channel, address: address)
    }

    private init(channel: any Channel, address: String) {
        self.channel = channel
        self.address = address
    }

    public func close() async {
        try? await channel.close()
    }
}

/// Parsing and checking `host:port` for the metrics endpoint.
public enum MetricsAddress {
    /// "127.0.0.1:9464", "[::1]:9464" or "localhost:9464" → host and port.
    public static func parse(_ text: String) -> (host: String, port: Int)? {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
        return (String(host), port)
    }

    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}

private final class MetricsHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let metrics: ControllerMetrics
    init(metrics: ControllerMetrics) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let request) = unwrapInboundIn(data) else { return }
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        let status: HTTPResponseStatus
        let body: String
        switch (request.method, path) {
        case (.GET, "/metrics"), (.HEAD, "/metrics"):
            status = .ok
            body = metrics.render()
        case (_, "/metrics"):
            status = .methodNotAllowed
            body = "only GET\n"
        default:
            status = .notFound
            body = "metrics are at /metrics\n"
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
    }
}
