public import AsyncHTTPClient
public import Logging
public import NIOCore
internal import NIOPosix
internal import Foundation
public import Tracing

/// The HTTP client of a cloud backend: one AsyncHTTPClient `HTTPClient` per
/// route — direct, through the `HTTP_PROXY` and through the `HTTPS_PROXY`
/// (one client when both name the same proxy) — and each request sent on
/// the route ``ProxySettings`` picks for its URL (docs/DESIGN.md §7.2).
/// AsyncHTTPClient reaches a target through an HTTP proxy with `CONNECT`,
/// for `https://` and `http://` URLs alike; a proxy URL's `user:password`
/// becomes the proxy's basic authorization.
///
/// A request that fails on its way through a proxy throws
/// ``ProxyRequestFailure``, whose description names the proxy as
/// `http://host:port` and never carries its password.
public final class CloudHTTPClient: Sendable {
    /// How a request is routed.
    public enum Route: Sendable {
        /// As the proxy settings say for its URL.
        case environment
        /// Never through a proxy (e.g. the instance metadata service).
        case direct
    }

    public let proxies: ProxySettings
    private let directClient: HTTPClient
    private let proxyClients: [ProxyServer: HTTPClient]

    /// - Parameters:
    ///   - configuration: applied to every route's client; its `proxy` is
    ///     replaced by each route's own.
    ///   - eventLoopGroup: by default NIO's shared singleton group.
    ///   - tracer: the shim's tracer when tracing is on: each request is
    ///     then a client span of the call being served, and carries its
    ///     `traceparent` header. nil: no spans.
    ///   - logger: told once, now, which routes are in use.
    public init(
        proxies: ProxySettings,
        configuration: HTTPClient.Configuration = HTTPClient.Configuration(),
        eventLoopGroup: (any EventLoopGroup)? = nil,
        tracer: (any Tracer)? = nil,
        logger: Logger
    ) {
        let eventLoopGroup = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        self.proxies = proxies
        var configuration = configuration
        configuration.tracing.tracer = tracer
        var direct = configuration
        direct.proxy = nil
        directClient = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: direct)
        var clients: [ProxyServer: HTTPClient] = [:]
        for proxy in [proxies.http, proxies.https].compactMap({ $0 }) where clients[proxy] == nil {
            var routed = configuration
            routed.proxy = .server(host: proxy.host, port: proxy.port, authorization: Self.authorization(proxy))
            clients[proxy] = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: routed)
        }
        proxyClients = clients
        logger.info("proxy routes", metadata: Self.routeMetadata(proxies))
    }

    /// What the start-up log line says: per scheme the proxy (as
    /// `http://host:port (VARIABLE)`) or `direct`, and the `NO_PROXY` entries.
    public static func routeMetadata(_ proxies: ProxySettings) -> Logger.Metadata {
        func describe(_ proxy: ProxyServer?) -> Logger.MetadataValue {
            guard let proxy else { return "direct" }
            let auth = proxy.username == nil ? "" : ", with basic authorization"
            return "\(proxy) (\(proxy.variable)\(auth))"
        }
        var metadata: Logger.Metadata = ["http": describe(proxies.http), "https": describe(proxies.https)]
        if let variable = proxies.noProxyVariable {
            metadata["no_proxy"] = "\(proxies.noProxy.map(\.text).joined(separator: ",")) (\(variable))"
        }
        return metadata
    }

    static func authorization(_ proxy: ProxyServer) -> HTTPClient.Authorization? {
        guard let username = proxy.username else { return nil }
        return .basic(username: username, password: proxy.password ?? "")
    }

    /// The proxy a request to `url` would go through on `route`, or nil.
    public func proxy(for url: String, route: Route = .environment) -> ProxyServer? {
        route == .direct ? nil : proxies.proxy(for: url)
    }

    /// Sends `request` on its route.
    ///
    /// - Throws: ``ProxyRequestFailure`` when it went through a proxy and
    ///   failed before an answer arrived; otherwise what AsyncHTTPClient threw.
    public func execute(_ request: HTTPClientRequest, timeout: TimeAmount, route: Route = .environment, logger: Logger? = nil)
        async throws -> HTTPClientResponse
    {
        guard let proxy = proxy(for: request.url, route: route), let client = proxyClients[proxy] else {
            if let logger {
                return try await directClient.execute(request, timeout: timeout, logger: logger)
            }
            return try await directClient.execute(request, timeout: timeout)
        }
        do {
            if let logger {
                return try await client.execute(request, timeout: timeout, logger: logger)
            }
            return try await client.execute(request, timeout: timeout)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw ProxyRequestFailure(proxy: proxy, cause: Self.cause(error, proxy))
        }
    }

    /// What went wrong through `proxy`, in words for AsyncHTTPClient's
    /// proxy errors, scrubbed of the proxy's password.
    static func cause(_ error: any Error, _ proxy: ProxyServer) -> String {
        switch error as? HTTPClientError {
        case .proxyAuthenticationRequired?:
            "the proxy asks for authorization (HTTP 407)\(proxy.username == nil ? "" : " and refused the one given")"
        case .invalidProxyResponse?:
            "the proxy refused to open a tunnel (its answer to CONNECT was not 200)"
        default:
            proxy.scrub("\(error)")
        }
    }

    /// Shuts every route's client down.
    public func shutdown() async throws {
        try await directClient.shutdown()
        for client in proxyClients.values { try await client.shutdown() }
    }
}

/// A request that failed on its way through a proxy: the proxy refused the
/// connection or the `CONNECT`, asked for authorization, or timed out.
public struct ProxyRequestFailure: Error, Sendable, CustomStringConvertible {
    public var proxy: ProxyServer
    /// What went wrong, scrubbed of the proxy's password.
    public var cause: String

    public var description: String { "through proxy \(proxy) (\(proxy.variable)): \(cause)" }
}
