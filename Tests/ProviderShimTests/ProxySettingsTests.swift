import CloudSupport
import Foundation
import Logging
import Testing
import TestSupport

/// The proxies a cloud backend reads from its environment (CloudSupport,
/// docs/DESIGN.md §7.2): which variable wins, which URLs are refused and
/// how, and which hosts NO_PROXY sends direct.
@Suite("Cloud proxies from the environment")
struct ProxySettingsTests {
    @Test func eachSchemeHasItsOwnVariableAndLowerCaseWins() throws {
        let settings = try ProxySettings.fromEnvironment([
            "HTTP_PROXY": "http://upper-http:3128", "http_proxy": "http://lower-http:3129",
            "HTTPS_PROXY": "http://upper-https:8080",
            "NO_PROXY": "upper.example", "no_proxy": "lower.example",
        ])
        #expect(settings.http?.host == "lower-http" && settings.http?.port == 3129 && settings.http?.variable == "http_proxy")
        #expect(settings.https?.host == "upper-https" && settings.https?.variable == "HTTPS_PROXY")
        #expect(settings.noProxy.map(\.text) == ["lower.example"])
        #expect(settings.noProxyVariable == "no_proxy")
        #expect(settings.proxy(for: "http://ec2.amazonaws.com/")?.host == "lower-http")
        #expect(settings.proxy(for: "https://ec2.us-east-1.amazonaws.com/")?.host == "upper-https")
        #expect(settings.proxy(for: "https://lower.example/") == nil)
        #expect(settings.proxy(for: "ftp://anywhere/") == nil, "only http and https are proxied")
    }

    @Test func anEmptyVariableIsUnsetAndNoVariableMeansDirect() throws {
        let settings = try ProxySettings.fromEnvironment(["https_proxy": "", "HTTPS_PROXY": "http://p:1", "http_proxy": "  "])
        #expect(settings.https?.variable == "HTTPS_PROXY", "the empty lower-case one does not hide the upper-case one")
        #expect(settings.http == nil)
        #expect(try ProxySettings.fromEnvironment(["PATH": "/bin"]) == .direct)
    }

    @Test(arguments: [
        ("http://proxy.corp:3128", "proxy.corp", 3128, nil as String?, nil as String?),
        ("proxy.corp:3128", "proxy.corp", 3128, nil, nil),
        ("http://proxy.corp", "proxy.corp", 80, nil, nil),
        ("http://proxy.corp:3128/", "proxy.corp", 3128, nil, nil),
        ("HTTP://Proxy.Corp:3128", "proxy.corp", 3128, nil, nil),
        ("http://[::1]:3128", "::1", 3128, nil, nil),
        ("http://alice:s%40cret@proxy.corp:3128", "proxy.corp", 3128, "alice", "s@cret"),
        ("http://alice@proxy.corp:3128", "proxy.corp", 3128, "alice", nil),
    ])
    func proxyURLsAreRead(text: String, host: String, port: Int, user: String?, password: String?) throws {
        let proxy = try #require(try ProxySettings.fromEnvironment(["HTTPS_PROXY": text]).https)
        #expect(proxy.host == host && proxy.port == port)
        #expect(proxy.username == user && proxy.password == password)
        #expect(proxy.description == (host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)"))
    }

    @Test(arguments: [
        ("https://proxy.corp:3128", "only http:// proxies are supported, not https://"),
        ("socks5://user:pw-Zq9@proxy.corp:1080", "only http:// proxies are supported, not socks5://"),
        ("http://proxy.corp:99999", "the port must be from 1 to 65535"),
        ("http://proxy.corp:0", "the port must be from 1 to 65535"),
        ("http://proxy.corp:80x", "it is not a URL"),
        ("http://", "it names no host"),
        ("http://user:pw-Zq9@proxy.corp/some/path", "it has a path"),
        ("http://proxy.corp:3128/?a=b", "it has a query or fragment"),
        ("http://:pw-Zq9@proxy.corp:3128", "it has a password but no user name"),
        ("http://proxy corp:3128", "it contains white space"),
    ])
    func aBadProxyURLIsRefusedNamingTheVariableNotThePassword(text: String, problem: String) {
        do {
            _ = try ProxySettings.fromEnvironment(["https_proxy": text])
            Issue.record("\(text) was accepted")
        } catch {
            #expect(error.variable == "https_proxy")
            #expect(error.description == "https_proxy: not a usable proxy URL: \(problem) (expected http://[user:password@]host[:port])")
            #expect(!error.description.contains("pw-Zq9"), "the password stays out of the message")
            #expect(!error.description.contains { $0.isNewline })
        }
    }

    /// curl's NO_PROXY rules (host or domain suffix, with or without a
    /// leading dot; `*`; IP literals; `:port`), plus CIDR blocks.
    @Test(arguments: [
        ("example.com", "https://example.com/", true),
        ("example.com", "https://ec2.example.com/", true),
        ("example.com", "https://notexample.com/", false),
        (".example.com", "https://example.com/", true),
        (".example.com", "https://a.b.example.com/", true),
        ("*.example.com", "https://a.example.com/", true),
        ("EXAMPLE.com", "https://Ec2.Example.COM./", true),
        ("*", "https://anything.at.all/", true),
        ("other.org, example.com", "https://x.example.com/", true),
        ("other.org,,", "https://x.example.com/", false),
        ("127.0.0.1", "http://127.0.0.1:5000/", true),
        ("127.0.0.1", "http://127.0.0.2:5000/", false),
        ("127.0.0.1:5000", "http://127.0.0.1:5000/", true),
        ("127.0.0.1:5000", "http://127.0.0.1:5001/", false),
        ("example.com:443", "https://example.com/", true),
        ("example.com:443", "http://example.com/", false),
        ("10.0.0.0/8", "https://10.20.30.40/", true),
        ("10.0.0.0/8", "https://11.0.0.1/", false),
        ("10.0.0.0/8", "https://10.example.com/", false),
        ("::1", "http://[::1]:8080/", true),
        ("[::1]:8080", "http://[::1]:8080/", true),
        ("[::1]:8080", "http://[::1]:8081/", false),
        ("fd00:ec2::/32", "http://[fd00:ec2::254]/", true),
        ("169.254.169.254", "http://169.254.169.254/", true),
    ])
    func noProxyMatchesLikeCurl(noProxy: String, url: String, direct: Bool) throws {
        let settings = try ProxySettings.fromEnvironment(["http_proxy": "http://p:3128", "https_proxy": "http://p:3128", "no_proxy": noProxy])
        #expect((settings.proxy(for: url) == nil) == direct, "NO_PROXY=\(noProxy) for \(url)")
    }

    @Test(arguments: ["10.0.0.0/33", "::1/129", "exa mple.com", "host:port", "a..b", "[::1", "[::1]x", "example.com:0", "bad_host!"])
    func aBadNoProxyEntryIsRefusedNamingIt(entry: String) {
        do {
            _ = try ProxySettings.fromEnvironment(["NO_PROXY": "ok.example, \(entry)"])
            Issue.record("\(entry) was accepted")
        } catch {
            #expect(error.description == "NO_PROXY: entry \"\(entry)\" is not a host, domain, IP address or CIDR block (with an optional :port), nor *")
        }
    }

    @Test func thePasswordNeverShowsInTheRoutesLogLineNorInAScrubbedText() throws {
        let settings = try ProxySettings.fromEnvironment([
            "HTTPS_PROXY": "http://alice:pw%2FZq9@proxy.corp:3128", "http_proxy": "http://plain:8080", "NO_PROXY": ".internal,10.0.0.0/8",
        ])
        let proxy = try #require(settings.https)
        #expect(proxy.password == "pw/Zq9")
        let metadata = CloudHTTPClient.routeMetadata(settings)
        #expect(metadata["https"]?.description == "http://proxy.corp:3128 (HTTPS_PROXY, with basic authorization)")
        #expect(metadata["http"]?.description == "http://plain:8080 (http_proxy)")
        #expect(metadata["no_proxy"]?.description == ".internal,10.0.0.0/8 (NO_PROXY)")
        #expect(CloudHTTPClient.routeMetadata(.direct)["https"]?.description == "direct")
        #expect(!metadata.values.contains { $0.description.contains("Zq9") })
        #expect(proxy.scrub("CONNECT failed for alice:pw/Zq9 and pw%2FZq9") == "CONNECT failed for alice:[secret] and [secret]")
    }

    @Test func aRequestGoesDirectWhenItsRouteSaysSo() async throws {
        let settings = try ProxySettings.fromEnvironment(["http_proxy": "http://127.0.0.1:3128"])
        let log = LogCapture()
        let client = CloudHTTPClient(proxies: settings, logger: log.logger())
        #expect(client.proxy(for: "http://169.254.169.254/latest/api/token")?.port == 3128)
        #expect(client.proxy(for: "http://169.254.169.254/latest/api/token", route: .direct) == nil)
        #expect(log.all.map(\.message) == ["proxy routes"], "the routes are logged once, at start")
        #expect(log.all.first?.metadata["http"] == "http://127.0.0.1:3128 (http_proxy)")
        try await client.shutdown()
    }
}
