import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import TestSupport

/// A tiny OTLP/HTTP trace collector on 127.0.0.1 for the tracing tests:
/// it answers every POST with an empty success and keeps the spans of
/// each export request, which the processes under test send as OTLP JSON
/// (`protocol: http/json`, read here with JSONSerialization: resourceSpans →
/// scopeSpans → spans, the service name from the resource's `service.name`).
/// Tests wait on it for the spans they expect, never on time.
final class OTLPCollector: Sendable {
    /// One span as exported. Ids are as the JSON carries them (the same
    /// encoding for every span, so they compare).
    struct Span: Sendable, CustomStringConvertible {
        var service: String
        var traceID: String
        var spanID: String
        /// Empty for a root span.
        var parentID: String
        var name: String
        /// OTLP's SpanKind: 1 internal, 2 server, 3 client.
        var kind: Int
        var attributes: [String: String]

        static let internalKind = 1, serverKind = 2, clientKind = 3

        var description: String { "\(service) \(name) kind=\(kind) trace=\(traceID) span=\(spanID) parent=\(parentID) \(attributes)" }
    }

    private struct State {
        var spans: [Span] = []
        /// Export requests received, and the Content-Types they came with.
        var requests = 0
        var contentTypes: Set<String> = []
        /// Bodies that were not OTLP JSON.
        var unreadable: [String] = []
        var version = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let channel: Mutex<(any Channel)?> = Mutex(nil)
    private let boundPort = Mutex(0)

    var port: Int { boundPort.withLock { $0 } }
    var endpoint: String { "http://127.0.0.1:\(port)/v1/traces" }
    var spans: [Span] { state.withLock { $0.spans } }
    var requests: Int { state.withLock { $0.requests } }
    var contentTypes: Set<String> { state.withLock { $0.contentTypes } }
    var unreadable: [String] { state.withLock { $0.unreadable } }

    private init() {}

    static func start() async throws -> OTLPCollector {
        let collector = OTLPCollector()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(collector: collector))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        collector.channel.withLock { $0 = channel }
        collector.boundPort.withLock { $0 = channel.localAddress?.port ?? 0 }
        return collector
    }

    func close() {
        channel.withLock { $0 }?.close(promise: nil)
    }

    /// Waits until `find` finds something in the spans received so far.
    func waitFor<T: Sendable>(_ what: String, _ limit: Duration = .seconds(60), _ find: @escaping @Sendable ([Span]) -> T?) async throws -> T {
        try await withTimeout(limit, what) {
            while true {
                let (found, version) = self.state.withLock { (find($0.spans), $0.version) }
                if let found { return found }
                try Task.checkCancellation()
                await self.changed(since: version)
            }
        }
    }

    /// Returns once an export arrived after `version`, or the task is cancelled.
    private func changed(since version: Int) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.version != version || Task.isCancelled { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            for waiter in state.withLock({ state in defer { state.waiters = [] }; return state.waiters }) { waiter.resume() }
        }
    }

    fileprivate func received(contentType: String?, body: [UInt8]) {
        let parsed = Self.parse(body)
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.requests += 1
            if let contentType { state.contentTypes.insert(contentType) }
            if let parsed { state.spans += parsed } else { state.unreadable.append(String(decoding: body.prefix(200), as: UTF8.self)) }
            state.version += 1
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// The spans of an ExportTraceServiceRequest in OTLP JSON, or nil.
    static func parse(_ body: [UInt8]) -> [Span]? {
        guard let root = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let resourceSpans = root["resourceSpans"] as? [[String: Any]]
        else { return nil }
        var spans: [Span] = []
        for resourceSpan in resourceSpans {
            let resource = attributes((resourceSpan["resource"] as? [String: Any])?["attributes"])
            for scopeSpan in resourceSpan["scopeSpans"] as? [[String: Any]] ?? [] {
                for span in scopeSpan["spans"] as? [[String: Any]] ?? [] {
                    spans.append(Span(
                        service: resource["service.name"] ?? "",
                        traceID: span["traceId"] as? String ?? "",
                        spanID: span["spanId"] as? String ?? "",
                        parentID: span["parentSpanId"] as? String ?? "",
                        name: span["name"] as? String ?? "",
                        kind: (span["kind"] as? NSNumber)?.intValue ?? 0,
                        attributes: attributes(span["attributes"])
                    ))
                }
            }
        }
        return spans
    }

    /// OTLP KeyValues, each value as text.
    static func attributes(_ list: Any?) -> [String: String] {
        var result: [String: String] = [:]
        for entry in list as? [[String: Any]] ?? [] {
            guard let key = entry["key"] as? String, let value = entry["value"] as? [String: Any], let first = value.first else { continue }
            result[key] = "\(first.value)"
        }
        return result
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let collector: OTLPCollector
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(collector: OTLPCollector) { self.collector = collector }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = []
            case .body(let buffer):
                body += buffer.readableBytesView
            case .end:
                guard let head else { return }
                collector.received(contentType: head.headers["Content-Type"].first, body: body)
                let answer = "{}"
                let headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", "\(answer.utf8.count)")])
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: answer)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
