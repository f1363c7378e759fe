public import CloudSupport
internal import AsyncHTTPClient
internal import Core
internal import Foundation
public import Logging
internal import NIOCore
internal import NIOHTTP1

/// Where an AWS API (EC2's or STS's) of one cloud spec is.
struct AWSEndpoint: Hashable, Sendable {
    var scheme: String
    var host: String
    var port: Int?
    var region: String

    /// The Host header: host, plus the port when it is not the scheme's default.
    var hostHeader: String {
        guard let port, !(scheme == "https" && port == 443), !(scheme == "http" && port == 80) else { return host }
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    var url: String { "\(scheme)://\(hostHeader)/" }

    /// The EC2 endpoint of `cloud`: its `endpoint`, or
    /// `https://ec2.<region>.amazonaws.com`. Plain HTTP is allowed only for a
    /// loopback endpoint given explicitly (a test server such as moto).
    static func of(_ cloud: ProviderV1.CloudSpec) throws(RPCError) -> AWSEndpoint {
        try endpoint(cloud, given: cloud.endpoint, service: "ec2", place: "endpoint")
    }

    /// The STS endpoint of `cloud`: its attribute `sts-endpoint`, or
    /// `https://sts.<region>.amazonaws.com`; plain HTTP as for EC2.
    static func sts(_ cloud: ProviderV1.CloudSpec) throws(RPCError) -> AWSEndpoint {
        try endpoint(cloud, given: cloud.attributes["sts-endpoint"] ?? "", service: "sts", place: "attribute sts-endpoint")
    }

    private static func endpoint(_ cloud: ProviderV1.CloudSpec, given: String, service: String, place: String) throws(RPCError) -> AWSEndpoint {
        guard !cloud.region.isEmpty else {
            throw RPCError(.invalidArgument, "the ec2 cloud spec needs a region, e.g. us-east-1")
        }
        guard !given.isEmpty else {
            return AWSEndpoint(scheme: "https", host: "\(service).\(cloud.region).amazonaws.com", port: nil, region: cloud.region)
        }
        let example = "https://\(service).us-east-1.amazonaws.com"
        guard let components = URLComponents(string: given), let scheme = components.scheme?.lowercased(),
              let host = components.host, !host.isEmpty
        else {
            throw RPCError(.invalidArgument, "the ec2 \(place) \"\(EC2Answers.clip(given))\" is not a URL such as \(example)")
        }
        switch scheme {
        case "https":
            break
        case "http":
            guard isLoopback(host) else {
                throw RPCError(.invalidArgument, "plain HTTP is allowed only for a loopback endpoint, not \(host); use https")
            }
        default:
            throw RPCError(.invalidArgument, "the ec2 \(place) must be https (or http on loopback), not \(scheme)")
        }
        return AWSEndpoint(scheme: scheme, host: host, port: components.port, region: cloud.region)
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }
}

/// One AWS Query API: how its requests are signed and versioned, and its
/// name in messages.
struct AWSService: Sendable {
    var name: String
    var signingName: String
    var apiVersion: String

    static let ec2 = AWSService(name: "EC2", signingName: "ec2", apiVersion: "2016-11-15")
    static let sts = AWSService(name: "STS", signingName: "sts", apiVersion: "2011-06-15")
}

/// The AWS Query API (EC2 `Version=2016-11-15`, STS `2011-06-15`) over
/// ``CloudHTTPClient`` (through the proxy the environment names), signed
/// with Signature V4. Errors come out as the provider contract's codes:
///
/// - AuthFailure, InvalidClientTokenId, SignatureDoesNotMatch, ExpiredToken,
///   RequestExpired (and similar) → Unauthenticated;
/// - UnauthorizedOperation, AccessDenied → PermissionDenied;
/// - RequestLimitExceeded, Throttling → ResourceExhausted with `retry-after-ms`;
/// - 5xx, connection and proxy errors → retried with jittered backoff
///   inside the call's deadline, then Unavailable (naming the proxy when
///   the request went through one).
///
/// Messages start with the action (`DescribeInstances: …`, `AssumeRole: …`)
/// and say what AWS said; a secret never appears in one.
public final class EC2Client: Sendable {
    public static let apiVersion = AWSService.ec2.apiVersion

    public struct Settings: Sendable {
        /// Attempts per call for 5xx and connection errors.
        public var maxAttempts = 3
        /// First retry delay (full jitter, doubling).
        public var retryBase: Duration = .milliseconds(200)
        /// Bound of one call when the caller gives none.
        public var defaultTimeout: Duration = .seconds(30)
        /// The hint sent with ResourceExhausted when EC2 throttles.
        public var throttleRetryAfter: Duration = .seconds(2)
        public init() {}
    }

    let http: CloudHTTPClient
    private let settings: Settings
    private let logger: Logger

    public init(http: CloudHTTPClient, settings: Settings = Settings(), logger: Logger) {
        self.http = http
        self.settings = settings
        self.logger = logger
    }

    /// Calls `action` of `service` and returns the body of its 2xx answer.
    func call(
        _ action: String,
        _ parameters: [(String, String)],
        service: AWSService = .ec2,
        endpoint: AWSEndpoint,
        credentials: AWSCredentials,
        deadline: ContinuousClock.Instant?
    ) async throws -> [UInt8] {
        let deadline = deadline ?? .now + settings.defaultTimeout
        let body = Array(SigV4.formEncode([("Action", action), ("Version", service.apiVersion)] + parameters).utf8)
        var attempt = 0
        while true {
            attempt += 1
            let failure: RPCError
            // Attempts share 90 % of the time left, so that the last failure
            // is reported (with its cause) before the caller's deadline.
            let left = deadline - .now
            let attemptDeadline = ContinuousClock.now + (left * 0.9) / (settings.maxAttempts - attempt + 1)
            do {
                return try await once(
                    action, service: service, body: body, endpoint: endpoint, credentials: credentials, deadline: attemptDeadline
                )
            } catch let error as Retryable {
                failure = error.error
            }
            let backoff = Duration.milliseconds(Int64.random(in: 0...(settings.retryBase.milliseconds << (attempt - 1))))
            guard attempt < settings.maxAttempts, ContinuousClock.now + backoff < deadline else { throw failure }
            logger.debug("retrying", metadata: ["action": "\(action)", "attempt": "\(attempt + 1)", "after": "\(backoff)", "error": "\(failure)"])
            try await Task.sleep(for: backoff)
        }
    }

    /// A failure worth another attempt (5xx, connection).
    private struct Retryable: Error {
        var error: RPCError
    }

    private func once(
        _ label: String, service: AWSService, body: [UInt8], endpoint: AWSEndpoint, credentials: AWSCredentials,
        deadline: ContinuousClock.Instant
    ) async throws -> [UInt8] {
        let headers = SigV4.sign(
            method: "POST", path: "/",
            headers: ["host": endpoint.hostHeader, "content-type": "application/x-www-form-urlencoded; charset=utf-8"],
            payload: body, service: service.signingName, region: endpoint.region, credentials: credentials, date: Date()
        )
        var request = HTTPClientRequest(url: endpoint.url)
        request.method = .POST
        for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let left = deadline - .now
        guard left > .zero else { throw RPCError(.deadlineExceeded, "\(label): no time left for \(service.name)") }
        let response: HTTPClientResponse
        let data: ByteBuffer
        do {
            response = try await http.execute(request, timeout: .nanoseconds(left.totalNanoseconds))
            data = try await response.body.collect(upTo: 64 << 20)
        } catch is CancellationError {
            throw CancellationError()
        } catch let failure as ProxyRequestFailure {
            let text = scrub(failure.description, credentials)
            throw Retryable(error: RPCError(.unavailable, "\(label): cannot reach \(service.name) at \(endpoint.hostHeader) \(text)"))
        } catch {
            let text = scrub("\(error)", credentials)
            throw Retryable(error: RPCError(.unavailable, "\(label): cannot reach \(service.name) at \(endpoint.hostHeader): \(text)"))
        }
        let bytes = Array(data.readableBytesView)
        let status = Int(response.status.code)
        if (200..<300).contains(status) { return bytes }
        let document = try? EC2Answers.error(bytes)
        let code = document?.code ?? ""
        let said = scrub(code.isEmpty ? "HTTP \(status)" : "\(code): \(document?.message ?? "")", credentials)
        if status >= 500 || code == "InternalError" || code == "Unavailable" || code == "ServiceUnavailable" {
            throw Retryable(error: RPCError(.unavailable, "\(label): \(service.name) is unavailable (\(said))"))
        }
        throw Self.mapError(code: code, status: status, said: "\(label): \(said)", retryAfter: settings.throttleRetryAfter)
    }

    /// `Errors/Error/Code` and `Message`, whatever the root element.
    static func errorCode(_ body: Data) -> (code: String, message: String) {
        guard let document = try? EC2Answers.error(Array(body)) else { return ("", "") }
        return (document.code, document.message)
    }

    static let unauthenticated: Set<String> = [
        "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "RequestExpired",
        "InvalidAccessKeyId", "IncompleteSignature", "MissingAuthenticationToken", "UnrecognizedClientException",
        "InvalidToken", "ExpiredTokenException",
    ]
    static let permissionDenied: Set<String> = [
        "UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "OptInRequired", "Blocked", "RegionDisabledException",
    ]
    static let throttled: Set<String> = ["RequestLimitExceeded", "Throttling", "ThrottlingException"]

    static func mapError(code: String, status: Int, said: String, retryAfter: Duration) -> RPCError {
        if unauthenticated.contains(code) { return RPCError(.unauthenticated, said) }
        if permissionDenied.contains(code) { return RPCError(.permissionDenied, said) }
        if throttled.contains(code) || status == 429 {
            return RPCError(.resourceExhausted, said, metadata: [(RPCError.retryAfterKey, "\(retryAfter.milliseconds)")])
        }
        if status == 401 { return RPCError(.unauthenticated, said) }
        if status == 403 { return RPCError(.permissionDenied, said) }
        return RPCError(.failedPrecondition, said)
    }

    /// Removes any secret part of `credentials` from `text`.
    func scrub(_ text: String, _ credentials: AWSCredentials) -> String {
        credentials.scrub(text)
    }
}

extension Duration {
    var milliseconds: Int64 { totalNanoseconds / 1_000_000 }
}
