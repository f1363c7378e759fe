public import Core
public import Logging
public import ServiceLifecycle
internal import NIOCore
internal import NIOHTTP1
internal import NIOPosix
internal import Foundation

/// Serves ``ControllerMetrics`` in the Prometheus text format at
/// `GET /metrics` on a loopback address (opt-in: `metrics.address` in the
/// config). Anything else is 404; only GET and HEAD are answered. With a
/// bearer token, `/metrics` answers 401 to a request without it.
///
/// With a ``HealthReporting``, also the probes: `GET /healthz` (200 `ok`
/// while the process serves) and `GET /readyz` (200 `ok`, or 503 with one
/// problem per line). Probes need no bearer token; without it a problem's
/// detail (a shim's exit, a database error) is left out.
///
/// Bounded like the control socket (see ``Limits``): open connections, idle
/// time, the time and size of a request head; hits are counted in
/// `instancepoller_server_limit_hits_total{server="metrics"}`.
///
/// A service: ``bind(host:port:metrics:limits:bearerToken:logger:)``
/// listens, ``run()`` serves (one task group, each connection's life a
/// child task) until the service group shuts down, then stops accepting,
/// gives open connections ``hangUpGrace`` to finish their answer and hang
/// up, and closes the rest.
public final class MetricsServer: Service, Sendable {
    private let loop: AcceptLoop
    private let counters: ServerLimitCounters
    /// The bound address, e.g. "127.0.0.1:9464" (port 0 in the config picks a free one).
    public let address: String

    public struct Unusable: Error, CustomStringConvertible {
        public var description: String
    }

    public struct Limits: Sendable, Hashable {
        /// Open connections; more are accepted and closed at once.
        public var maxConnections: Int
        /// A connection that neither sends nor receives for this long is closed.
        public var idleTimeout: Duration
        /// A request head must be complete this soon after connecting.
        public var headerTimeout: Duration
        /// The most bytes a request (its head) may take; larger ones get 431.
        public var maxHeaderBytes: Int

        public init(maxConnections: Int = 64, idleTimeout: Duration = .seconds(300), headerTimeout: Duration = .seconds(5), maxHeaderBytes: Int = 8192) {
            self.maxConnections = maxConnections
            self.idleTimeout = idleTimeout
            self.headerTimeout = headerTimeout
            self.maxHeaderBytes = maxHeaderBytes
        }
    }

    /// Binds `host:port`; the host must be a loopback address.
    ///
    /// - Parameter bearerToken: when set, `/metrics` requires
    ///   `Authorization: Bearer <token>`.
    public static func bind(
        host: String,
        port: Int,
        metrics: ControllerMetrics,
        limits: Limits = Limits(),
        bearerToken: MetricsBearerToken? = nil,
        health: (any HealthReporting)? = nil,
        logger: Logger
    ) async throws -> MetricsServer {
        guard MetricsAddress.isLoopback(host) else {
            throw Unusable(description: "metrics address \(host) is not a loopback address (use 127.0.0.1 or ::1)")
        }
        let counters = ServerLimitCounters(server: "metrics") { limit in
            metrics.serverLimitHit(server: "metrics", limit: limit.rawValue)
        }
        metrics.onScrape {
            let stats = counters.stats
            metrics.server("metrics", connections: stats.connections, bufferedRequestBytes: stats.bufferedRequestBytes)
        }
        let loop = AcceptLoop()
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 128)
            // Nothing is accepted before run() starts its accept loop.
            .serverChannelOption(.autoRead, value: false)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let peer: Logger.Metadata = ["peer": "\(channel.remoteAddress.map { "\($0)" } ?? "?")"]
                    guard counters.openConnection(cap: limits.maxConnections) else {
                        counters.hit(
                            .connections, "refused metrics connection: \(limits.maxConnections) connections are open, the most it serves",
                            metadata: peer, logger: logger
                        )
                        throw Unusable(description: "too many connections")
                    }
                    channel.closeFuture.whenComplete { _ in
                        let open = counters.closeConnection()
                        logger.trace("metrics connection closed", metadata: peer.merging(["open": "\(open)"]) { $1 })
                    }
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(IdleStateHandler(allTimeout: .nanoseconds(limits.idleTimeout.totalNanoseconds)))
                    try pipeline.addHandler(RequestHeadGuard(limits: limits, counters: counters, peer: peer, logger: logger))
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    try pipeline.addHandler(
                        MetricsHandler(metrics: metrics, token: bearerToken, health: health, counters: counters, peer: peer, logger: logger))
                    guard loop.adopt(channel) else { throw Unusable(description: "the metrics server is stopping") }
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            throw Unusable(description: "cannot serve metrics on \(host):\(port): \(error)")
        }
        loop.listening(on: channel)
        let bound = channel.localAddress
        let address = "\(bound?.ipAddress ?? host):\(bound?.port ?? port)"
        logger.info("serving metrics", metadata: ["address": "http://\(address)/metrics", "bearer_token": "\(bearerToken == nil ? "off" : "required")"])
        return MetricsServer(loop: loop, address: address, counters: counters)
    }

    private init(loop: AcceptLoop, address: String, counters: ServerLimitCounters) {
        self.loop = loop
        self.address = address
        self.counters = counters
    }

    /// What a graceful stop gives open connections: an answer is written in
    /// the read that brought its request, and the connection then closes,
    /// so this only bounds a client that sends its request late or never.
    public static let hangUpGrace: Duration = .milliseconds(500)

    /// Open connections and the limits hit so far.
    public var limitStats: ServerLimitStats { counters.stats }

    /// Serves until the service group shuts down gracefully (then stops as
    /// described above) or the task is cancelled (then closes at once).
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.loop.run() }
            try? await gracefulShutdown()
            await loop.stop(.graceful(drain: .zero, hangUpGrace: Self.hangUpGrace))
        }
    }

    /// Stops listening and closes every connection; returns once closed.
    public func close() async {
        await loop.stop(.immediate)
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

/// The secret `/metrics` requires when set (`metrics.bearer_token_file`).
/// Never printed: its description is redacted.
public struct MetricsBearerToken: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    let value: [UInt8]

    public init?(_ text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty, !trimmed.contains(where: { $0.isWhitespace || $0.isNewline }) else { return nil }
        value = Array(trimmed.utf8)
    }

    /// Whether `header` is `Bearer <this token>`, in time that does not
    /// depend on where the token differs.
    func accepts(authorization header: String?) -> Bool {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return false }
        let offered = Array(header.dropFirst(7).trimmingCharacters(in: .whitespaces).utf8)
        return Self.constantTimeEqual(offered, value)
    }

    /// Every byte of the longer input is looked at whatever differs.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<max(a.count, b.count) {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            difference |= x ^ y
        }
        return difference == 0
    }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}

/// Bounds a metrics request before HTTP parsing: its head must arrive
/// within the header timeout and take at most `maxHeaderBytes` (the whole
/// request counts; `/metrics` takes no body). Removes itself once the head
/// is complete.
private final class RequestHeadGuard: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let limits: MetricsServer.Limits
    let counters: ServerLimitCounters
    let peer: Logger.Metadata
    let logger: Logger
    private var received = 0
    private var timer: Scheduled<Void>?
    private var refused = false

    init(limits: MetricsServer.Limits, counters: ServerLimitCounters, peer: Logger.Metadata, logger: Logger) {
        self.limits = limits
        self.counters = counters
        self.peer = peer
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let this = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loopContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        let timeout = limits.headerTimeout
        timer = context.eventLoop.scheduleTask(in: .nanoseconds(timeout.totalNanoseconds)) {
            let this = this.value
            this.counters.hit(.headerTimeout, "closing metrics connection: no complete request head within \(timeout)", metadata: this.peer, logger: this.logger)
            loopContext.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        received += unwrapInboundIn(data).readableBytes
        if received > limits.maxHeaderBytes {
            refused = true
            timer?.cancel()
            counters.hit(
                .headerSize, "refused a metrics request: its head exceeds \(limits.maxHeaderBytes) bytes", metadata: peer, logger: logger
            )
            let head = HTTPResponseHead(
                version: .http1_1, status: .requestHeaderFieldsTooLarge,
                headers: ["Content-Length": "0", "Connection": "close"]
            )
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
            return
        }
        context.fireChannelRead(data)
    }

    /// The head is complete once an answer is being written.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        timer?.cancel()
        timer = nil
        context.write(data, promise: promise)
    }
}

private final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let metrics: ControllerMetrics
    let token: MetricsBearerToken?
    let health: (any HealthReporting)?
    let counters: ServerLimitCounters
    let peer: Logger.Metadata
    let logger: Logger
    /// A request is being answered (`/readyz` answers later): a request
    /// pipelined behind it is not read (the connection closes after the answer).
    private var answering = false
    private var removed = false

    init(
        metrics: ControllerMetrics, token: MetricsBearerToken?, health: (any HealthReporting)?, counters: ServerLimitCounters,
        peer: Logger.Metadata, logger: Logger
    ) {
        self.metrics = metrics
        self.token = token
        self.health = health
        self.counters = counters
        self.peer = peer
        self.logger = logger
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        removed = true
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .all {
            counters.hit(.idleTimeout, "closing idle metrics connection", metadata: peer, logger: logger)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let request) = unwrapInboundIn(data), !answering else { return }
        answering = true
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        let status: HTTPResponseStatus
        let body: String
        var headers = HTTPHeaders()
        switch (request.method, path) {
        case (.GET, "/healthz") where health != nil, (.HEAD, "/healthz") where health != nil:
            status = .ok
            body = HealthAnswer.alive
        case (.GET, "/readyz") where health != nil, (.HEAD, "/readyz") where health != nil:
            // The answer comes once the checks are done (the store's is bounded).
            let detailed = token?.accepts(authorization: request.headers.first(name: "Authorization")) ?? true
            let promise = context.eventLoop.makePromise(of: [HealthProblem].self)
            promise.completeWithTask { [health] in await health!.problems() }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { problems in
                let (handler, context) = bound.value
                // Hung up meanwhile: nobody to answer.
                guard !handler.removed else { return }
                let answer = HealthAnswer.readiness(problems, detailed: detailed)
                handler.reply(context: context, request: request, status: answer.ready ? .ok : .serviceUnavailable, body: answer.body, headers: HTTPHeaders())
            }
            return
        case (.GET, "/metrics"), (.HEAD, "/metrics"):
            if let token, !token.accepts(authorization: request.headers.first(name: "Authorization")) {
                counters.hit(.unauthorized, "refused a metrics request without the bearer token", metadata: peer, logger: logger)
                status = .unauthorized
                body = "a bearer token is required\n"
                headers.add(name: "WWW-Authenticate", value: "Bearer realm=\"instancepoller\"")
            } else {
                status = .ok
                body = metrics.render()
            }
        case (_, "/metrics"):
            status = .methodNotAllowed
            body = "only GET\n"
        default:
            status = .notFound
            body = "metrics are at /metrics\n"
        }
        reply(context: context, request: request, status: status, body: body, headers: headers)
    }

    private func reply(context: ChannelHandlerContext, request: HTTPRequestHead, status: HTTPResponseStatus, body: String, headers: HTTPHeaders) {
        var headers = headers
        let exposition = status == .ok && request.uri.hasPrefix("/metrics")
        headers.add(name: "Content-Type", value: exposition ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
    }
}
