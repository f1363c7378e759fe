internal import AsyncHTTPClient
public import CloudSupport
internal import Core
internal import Foundation
internal import Logging
internal import NIOConcurrencyHelpers
internal import NIOCore
internal import NIOHTTP1

/// Where the instance metadata service is: `AWS_EC2_METADATA_SERVICE_ENDPOINT`
/// from the shim's environment (the AWS SDKs' variable), by default
/// `http://169.254.169.254`. Plain HTTP only to a link-local or loopback
/// address, as the service itself is reached.
public struct InstanceMetadataEndpoint: Sendable, Hashable {
    public static let variable = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
    public static let standard = InstanceMetadataEndpoint(scheme: "http", host: "169.254.169.254", port: nil)

    var scheme: String
    var host: String
    var port: Int?

    /// `scheme://host[:port]`, without a trailing slash.
    public var url: String {
        let bracketed = host.contains(":") ? "[\(host)]" : host
        return port.map { "\(scheme)://\(bracketed):\($0)" } ?? "\(scheme)://\(bracketed)"
    }

    /// The endpoint `environment` names, or the standard one.
    ///
    /// - Throws: one line naming the variable when it is not such a URL.
    public static func fromEnvironment(_ environment: [String: String]) throws(EnvironmentVariableError) -> InstanceMetadataEndpoint {
        guard let text = environment[variable]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return .standard }
        func fail(_ problem: String) -> EnvironmentVariableError {
            EnvironmentVariableError(variable: variable, problem: "\(problem) (expected a URL such as http://169.254.169.254)")
        }
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              var host = components.host, !host.isEmpty
        else { throw fail("\"\(EC2Answers.clip(text))\" is not a URL") }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard components.path.isEmpty || components.path == "/" else { throw fail("it has a path") }
        if let port = components.port, !(1...65535).contains(port) { throw fail("the port must be from 1 to 65535") }
        switch scheme {
        case "https":
            break
        case "http":
            guard isLinkLocalOrLoopback(host) else {
                throw fail("plain http is allowed only to a link-local or loopback address, not \(EC2Answers.clip(host))")
            }
        default:
            throw fail("the scheme must be http or https, not \(EC2Answers.clip(scheme))")
        }
        return InstanceMetadataEndpoint(scheme: scheme, host: host.lowercased(), port: components.port)
    }

    /// 169.254.0.0/16, 127.0.0.0/8, localhost, ::1, fe80::/10, and EC2's
    /// IPv6 metadata address fd00:ec2::254.
    static func isLinkLocalOrLoopback(_ host: String) -> Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" || host == "fd00:ec2::254" { return true }
        if host.hasPrefix("169.254.") || host.hasPrefix("127.") { return true }
        return host.hasPrefix("fe8") || host.hasPrefix("fe9") || host.hasPrefix("fea") || host.hasPrefix("feb")
    }
}

/// The instance metadata service, IMDSv2: a session token from
/// `PUT /latest/api/token` (reused until shortly before its TTL ends), then
/// the role from `GET /latest/meta-data/iam/security-credentials/` and its
/// keys from `GET …/<role>`, each with the token. Always direct, never
/// through a proxy. A request the service answers 401 (the token has gone,
/// e.g. the service restarted) is sent once more with a new token.
final class InstanceMetadataClient: Sendable {
    let endpoint: InstanceMetadataEndpoint
    private let http: CloudHTTPClient
    /// The TTL asked for a session token, in seconds (IMDS allows 1–21600).
    let tokenTTL: Int
    private let token = NIOLockedValueBox<(value: String, until: ContinuousClock.Instant)?>(nil)
    private let logger: Logger

    /// Bound of one metadata request when the caller's deadline is later.
    static let requestTimeout: Duration = .seconds(5)

    init(endpoint: InstanceMetadataEndpoint, http: CloudHTTPClient, tokenTTL: Int = 21600, logger: Logger) {
        self.endpoint = endpoint
        self.http = http
        self.tokenTTL = tokenTTL
        self.logger = logger
    }

    /// The keys of `role`, or of the one role the instance has.
    func credentials(role: String?, deadline: ContinuousClock.Instant?) async throws -> TemporaryCredentials {
        let prefix = "/latest/meta-data/iam/security-credentials/"
        var name = role
        if name == nil {
            let listing = try await get(prefix, deadline: deadline)
            guard listing.status == 200 else {
                throw failure(listing.status, what: "list the instance's roles", missing: "the instance has no role (no instance profile is attached)")
            }
            guard let first = EC2Answers.roleNames(listing.body).first else {
                throw RPCError(.unauthenticated, "instance-role: the instance has no role (\(prefix) lists none)")
            }
            name = first
        }
        let path = prefix + (name!.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? name!)
        let answer = try await get(path, deadline: deadline)
        guard answer.status == 200 else {
            throw failure(answer.status, what: "read the role's keys", missing: "the instance has no role of the name the credential's attribute role gives")
        }
        do {
            return try EC2Answers.instanceRoleCredentials(answer.body)
        } catch {
            throw RPCError(.unauthenticated, "instance-role: \(error)")
        }
    }

    private func failure(_ status: Int, what: String, missing: String) -> RPCError {
        switch status {
        case 404: RPCError(.unauthenticated, "instance-role: \(missing)")
        case 401, 403: RPCError(.unauthenticated, "instance-role: the instance metadata service at \(endpoint.url) refused to \(what) (HTTP \(status))")
        default: RPCError(.unavailable, "instance-role: the instance metadata service at \(endpoint.url) cannot \(what) (HTTP \(status))")
        }
    }

    /// GET `path` with the session token; on 401, once more with a new token.
    private func get(_ path: String, deadline: ContinuousClock.Instant?) async throws -> (status: Int, body: [UInt8]) {
        let answer = try await send(.GET, path, headers: [("X-aws-ec2-metadata-token", try await sessionToken(deadline: deadline))], deadline: deadline)
        guard answer.status == 401 else { return answer }
        logger.debug("instance metadata token refused; getting a new one")
        token.withLockedValue { $0 = nil }
        return try await send(.GET, path, headers: [("X-aws-ec2-metadata-token", try await sessionToken(deadline: deadline))], deadline: deadline)
    }

    /// The session token: the one held while its TTL lasts (less a minute),
    /// else a new one.
    private func sessionToken(deadline: ContinuousClock.Instant?) async throws -> String {
        if let held = token.withLockedValue({ $0 }), ContinuousClock.now < held.until { return held.value }
        let started = ContinuousClock.now
        let answer = try await send(.PUT, "/latest/api/token", headers: [("X-aws-ec2-metadata-token-ttl-seconds", "\(tokenTTL)")], deadline: deadline)
        guard answer.status == 200 else {
            switch answer.status {
            case 403, 404, 405:
                throw RPCError(.unauthenticated, "instance-role: the instance metadata service at \(endpoint.url) gives no IMDSv2 token (HTTP \(answer.status)); is it enabled?")
            default:
                throw RPCError(.unavailable, "instance-role: the instance metadata service at \(endpoint.url) gives no token (HTTP \(answer.status))")
            }
        }
        let value = String(decoding: answer.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !value.isEmpty else {
            throw RPCError(.unavailable, "instance-role: the instance metadata service at \(endpoint.url) answered an empty token")
        }
        let lasts = Duration.seconds(max(1, tokenTTL - 60))
        token.withLockedValue { $0 = (value, started + lasts) }
        return value
    }

    private func send(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)], deadline: ContinuousClock.Instant?
    ) async throws -> (status: Int, body: [UInt8]) {
        var request = HTTPClientRequest(url: endpoint.url + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let bound = ContinuousClock.now + Self.requestTimeout
        let left = min(deadline ?? bound, bound) - .now
        guard left > .zero else { throw RPCError(.deadlineExceeded, "instance-role: no time left for the instance metadata service") }
        do {
            let response = try await http.execute(request, timeout: .nanoseconds(left.totalNanoseconds), route: .direct)
            let body = try await response.body.collect(upTo: 1 << 20)
            return (Int(response.status.code), Array(body.readableBytesView))
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            var text = "\(error)"
            if let held = token.withLockedValue({ $0 }) { text = text.replacingOccurrences(of: held.value, with: "[secret]") }
            throw RPCError(.unavailable, "instance-role: cannot reach the instance metadata service at \(endpoint.url): \(text)")
        }
    }
}
