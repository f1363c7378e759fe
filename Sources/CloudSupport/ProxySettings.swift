internal import Foundation
#if canImport(Glibc)
internal import Glibc
#endif

/// An HTTP proxy named by the environment (`HTTPS_PROXY`, `HTTP_PROXY`).
///
/// Its description is `http://host:port`: the user name and password, when
/// the URL had them, never appear in a description, a log line or an error.
public struct ProxyServer: Sendable, Hashable, CustomStringConvertible {
    /// Host name or IP address (an IPv6 address without brackets).
    public var host: String
    public var port: Int
    /// Basic authorization for the proxy, from the URL's `user:password@`.
    public var username: String?
    public var password: String?
    /// The variable it came from, e.g. `https_proxy`.
    public var variable: String

    public init(host: String, port: Int, username: String? = nil, password: String? = nil, variable: String) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.variable = variable
    }

    public var description: String {
        host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)"
    }

    /// Removes the proxy's password (and its percent-encoded form) from `text`.
    public func scrub(_ text: String) -> String {
        guard let password, !password.isEmpty else { return text }
        var text = text.replacingOccurrences(of: password, with: "[secret]")
        if let encoded = password.addingPercentEncoding(withAllowedCharacters: .alphanumerics), encoded != password {
            text = text.replacingOccurrences(of: encoded, with: "[secret]")
        }
        return text
    }
}

/// One `NO_PROXY` entry: a host or domain suffix, an IP address or CIDR
/// block, or `*`; optionally limited to one port.
public struct NoProxyRule: Sendable, Hashable, CustomStringConvertible {
    enum Kind: Hashable {
        case everything
        /// Matches the name itself and every name under it.
        case domain(String)
        /// An IP address (prefix = its full length) or a CIDR block.
        case network([UInt8], prefix: Int)
    }

    let kind: Kind
    let port: Int?
    /// As written (trimmed), for the start-up log line.
    public let text: String

    public var description: String { text }

    /// Whether a request to `host` (a name or an IP literal, brackets
    /// removed, lower case) on `port` goes direct.
    func matches(host: String, port: Int) -> Bool {
        if let own = self.port, own != port { return false }
        switch kind {
        case .everything:
            return true
        case .domain(let domain):
            return host == domain || host.hasSuffix("." + domain)
        case .network(let network, let prefix):
            guard let address = ProxySettings.ipBytes(host), address.count == network.count else { return false }
            return ProxySettings.samePrefix(address, network, bits: prefix)
        }
    }
}

/// Why an environment variable (a proxy's, the metadata endpoint's) could
/// not be used: one line that names the variable and never repeats a proxy
/// URL (which may carry a password).
public struct EnvironmentVariableError: Error, Sendable, Equatable, CustomStringConvertible {
    public var variable: String
    public var problem: String

    public init(variable: String, problem: String) {
        self.variable = variable
        self.problem = problem
    }

    public var description: String { "\(variable): \(problem)" }
}

/// Which proxy, if any, a cloud request goes through: `HTTP_PROXY` for
/// `http://` URLs, `HTTPS_PROXY` for `https://` URLs, nothing for a host
/// that `NO_PROXY` lists (docs/DESIGN.md §7.2). Each variable is read in
/// lower case first, as curl does: `https_proxy` wins over `HTTPS_PROXY`.
/// An empty variable counts as unset.
public struct ProxySettings: Sendable, Hashable {
    public var http: ProxyServer?
    public var https: ProxyServer?
    public var noProxy: [NoProxyRule]
    /// The variable `noProxy` came from (for the start-up log line).
    public var noProxyVariable: String?

    public init(http: ProxyServer? = nil, https: ProxyServer? = nil, noProxy: [NoProxyRule] = [], noProxyVariable: String? = nil) {
        self.http = http
        self.https = https
        self.noProxy = noProxy
        self.noProxyVariable = noProxyVariable
    }

    /// No proxy at all.
    public static let direct = ProxySettings()

    /// Reads `http_proxy`/`HTTP_PROXY`, `https_proxy`/`HTTPS_PROXY` and
    /// `no_proxy`/`NO_PROXY` from `environment`.
    ///
    /// - Throws: ``EnvironmentVariableError`` naming the variable when a proxy URL
    ///   is not `http://[user:password@]host[:port][/]` or a `NO_PROXY`
    ///   entry is neither a host, a domain, an IP address nor a CIDR block.
    public static func fromEnvironment(_ environment: [String: String]) throws(EnvironmentVariableError) -> ProxySettings {
        func pick(_ name: String) -> (variable: String, value: String)? {
            for variable in [name.lowercased(), name.uppercased()] {
                if let value = environment[variable]?.trimmingCharacters(in: .whitespaces), !value.isEmpty {
                    return (variable, value)
                }
            }
            return nil
        }
        var settings = ProxySettings()
        if let (variable, value) = pick("http_proxy") { settings.http = try parseProxy(value, variable: variable) }
        if let (variable, value) = pick("https_proxy") { settings.https = try parseProxy(value, variable: variable) }
        if let (variable, value) = pick("no_proxy") {
            settings.noProxy = try parseNoProxy(value, variable: variable)
            settings.noProxyVariable = variable
        }
        return settings
    }

    /// The proxy for a request to `url`, or nil to go direct (no proxy for
    /// its scheme, `NO_PROXY` lists its host, or a scheme other than http
    /// and https).
    public func proxy(for url: String) -> ProxyServer? {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
              let host = components.host, !host.isEmpty
        else { return nil }
        return proxy(scheme: scheme, host: host, port: components.port)
    }

    /// The proxy for a request to `scheme://host[:port]`, or nil to go direct.
    public func proxy(scheme: String, host: String, port: Int?) -> ProxyServer? {
        let proxy: ProxyServer?
        let defaultPort: Int
        switch scheme.lowercased() {
        case "http": (proxy, defaultPort) = (http, 80)
        case "https": (proxy, defaultPort) = (https, 443)
        default: return nil
        }
        guard let proxy else { return nil }
        return bypasses(host: host, port: port ?? defaultPort) ? nil : proxy
    }

    /// Whether `NO_PROXY` sends a request to `host` on `port` direct.
    public func bypasses(host: String, port: Int) -> Bool {
        var host = host.lowercased()
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        while host.hasSuffix(".") { host.removeLast() }
        return noProxy.contains { $0.matches(host: host, port: port) }
    }

    // MARK: - Parsing

    static let proxyShape = "expected http://[user:password@]host[:port]"

    /// Parses one proxy URL; a URL without a scheme is taken as http://.
    static func parseProxy(_ value: String, variable: String) throws(EnvironmentVariableError) -> ProxyServer {
        func fail(_ problem: String) -> EnvironmentVariableError {
            EnvironmentVariableError(variable: variable, problem: "not a usable proxy URL: \(problem) (\(proxyShape))")
        }
        guard !value.contains(where: { $0.isWhitespace || $0.isNewline }) else { throw fail("it contains white space") }
        let text = value.contains("://") ? value : "http://" + value
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased() else {
            throw fail("it is not a URL")
        }
        guard scheme == "http" else {
            throw fail("only http:// proxies are supported, not \(scheme)://")
        }
        guard var host = components.host, !host.isEmpty else { throw fail("it names no host") }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw fail("it names no host") }
        let port = components.port ?? 80
        guard (1...65535).contains(port) else { throw fail("the port must be from 1 to 65535") }
        guard components.path.isEmpty || components.path == "/" else { throw fail("it has a path") }
        guard components.query == nil, components.fragment == nil else { throw fail("it has a query or fragment") }
        let username = components.user.flatMap { $0.isEmpty ? nil : $0 }
        let password = components.password
        if password != nil, username == nil { throw fail("it has a password but no user name") }
        return ProxyServer(host: host.lowercased(), port: port, username: username, password: password, variable: variable)
    }

    /// Parses a `NO_PROXY` list: comma-separated entries, each `*`, a host
    /// or domain (a leading `.` or `*.` is dropped: `.example.com` and
    /// `example.com` both match example.com and every name under it), an IP
    /// address (IPv6 with or without brackets) or a CIDR block, any of them
    /// but `*` optionally followed by `:port`.
    static func parseNoProxy(_ value: String, variable: String) throws(EnvironmentVariableError) -> [NoProxyRule] {
        var rules: [NoProxyRule] = []
        for raw in value.split(separator: ",") {
            let entry = raw.trimmingCharacters(in: .whitespaces)
            guard !entry.isEmpty else { continue }
            guard let rule = noProxyRule(entry.lowercased(), text: entry) else {
                throw EnvironmentVariableError(
                    variable: variable,
                    problem: "entry \"\(entry)\" is not a host, domain, IP address or CIDR block (with an optional :port), nor *"
                )
            }
            rules.append(rule)
        }
        return rules
    }

    private static func noProxyRule(_ entry: String, text: String) -> NoProxyRule? {
        if entry == "*" { return NoProxyRule(kind: .everything, port: nil, text: text) }
        var body = entry
        var port: Int?
        if body.hasPrefix("[") {
            // [v6] or [v6]:port, or [v6/prefix]
            guard let close = body.firstIndex(of: "]") else { return nil }
            let rest = body[body.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let number = Int(rest.dropFirst()), (1...65535).contains(number) else { return nil }
                port = number
            }
            body = String(body[body.index(after: body.startIndex)..<close])
        } else if body.filter({ $0 == ":" }).count == 1 {
            // host:port (a bare IPv6 address has several colons)
            let parts = body.split(separator: ":", omittingEmptySubsequences: false)
            guard let number = Int(parts[1]), (1...65535).contains(number) else { return nil }
            port = number
            body = String(parts[0])
        }
        // An IP address or a CIDR block.
        let pieces = body.split(separator: "/", omittingEmptySubsequences: false)
        if pieces.count == 2 {
            guard let address = ipBytes(String(pieces[0])), let prefix = Int(pieces[1]), (0...address.count * 8).contains(prefix) else {
                return nil
            }
            return NoProxyRule(kind: .network(address, prefix: prefix), port: port, text: text)
        }
        guard pieces.count == 1 else { return nil }
        if let address = ipBytes(body) {
            return NoProxyRule(kind: .network(address, prefix: address.count * 8), port: port, text: text)
        }
        // A host or domain.
        if body.hasPrefix("*.") { body.removeFirst(2) } else if body.hasPrefix(".") { body.removeFirst() }
        while body.hasSuffix(".") { body.removeLast() }
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789-._")
        guard !body.isEmpty, body.allSatisfy(allowed.contains), !body.hasPrefix("."), !body.contains("..") else { return nil }
        return NoProxyRule(kind: .domain(body), port: port, text: text)
    }

    /// The bytes of an IPv4 (4) or IPv6 (16) literal, or nil.
    static func ipBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    static func samePrefix(_ a: [UInt8], _ b: [UInt8], bits: Int) -> Bool {
        var left = bits
        for index in 0..<min(a.count, b.count) where left > 0 {
            let take = min(8, left)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
            if a[index] & mask != b[index] & mask { return false }
            left -= take
        }
        return true
    }
}
