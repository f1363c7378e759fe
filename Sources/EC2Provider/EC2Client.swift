public import AsyncHTTPClient
internal import Core
internal import CloudSupport
internal import Foundation
public import Logging
internal import NIOCore
internal import NIOHTTP1

/// Where the EC2 API of one cloud spec is.
struct EC2Endpoint: Hashable, Sendable {
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

    /// The endpoint of `cloud`: its `endpoint`, or
    /// `https://ec2.<region>.amazonaws.com`. Plain HTTP is allowed only for a
    /// loopback endpoint given explicitly (a test server such as moto).
    static func of(_ cloud: ProviderV1.CloudSpec) throws(RPCError) -> EC2Endpoint {
        guard !cloud.region.isEmpty else {
            throw RPCError(.invalidArgument, "the ec2 cloud spec needs a region, e.g. us-east-1")
        }
        guard !cloud.endpoint.isEmpty else {
            return EC2Endpoint(scheme: "https", host: "ec2.\(cloud.region).amazonaws.com", port: nil, region: cloud.region)
        }
        guard let components = URLComponents(string: cloud.endpoint), let scheme = components.scheme?.lowercased(),
              let host = components.host, !host.isEmpty
        else {
            throw RPCError(.invalidArgument, "the ec2 endpoint \"\(cloud.endpoint)\" is not a URL such as https://ec2.us-east-1.amazonaws.com")
        }
        switch scheme {
        case "https":
            break
        case "http":
            guard host == "localhost" || host == "::1" || host.hasPrefix("127.") else {
                throw RPCError(.invalidArgument, "plain HTTP is allowed only for a loopback endpoint, not \(host); use https")
            }
        default:
            throw RPCError(.invalidArgument, "the ec2 endpoint must be https (or http on loopback), not \(scheme)")
        }
        return EC2Endpoint(scheme: scheme, host: host, port: components.port, region: cloud.region)
    }
}

/// The EC2 Query API (`Version=2016-11-15`) over AsyncHTTPClient, signed
/// with Signature V4. Errors come out as the provider contract's codes:
///
/// - AuthFailure, InvalidClientTokenId, SignatureDoesNotMatch, ExpiredToken,
///   RequestExpired (and similar) → Unauthenticated;
/// - UnauthorizedOperation, AccessDenied → PermissionDenied;
/// - RequestLimitExceeded, Throttling → ResourceExhausted with `retry-after-ms`;
/// - 5xx and connection errors → retried with jittered backoff inside the
///   call's deadline, then Unavailable.
///
/// Messages say what EC2 said; a secret never appears in one.
public final class EC2Client: Sendable {
    public static let apiVersion = "2016-11-15"

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

    private let http: HTTPClient
    private let settings: Settings
    private let logger: Logger

    public init(http: HTTPClient, settings: Settings = Settings(), logger: Logger) {
        self.http = http
        self.settings = settings
        self.logger = logger
    }

    /// Calls `action` and returns the parsed answer.
    func call(
        _ action: String,
        _ parameters: [(String, String)],
        endpoint: EC2Endpoint,
        credentials: AWSCredentials,
        deadline: ContinuousClock.Instant?
    ) async throws -> XMLTree {
        let deadline = deadline ?? .now + settings.defaultTimeout
        let body = Array(SigV4.formEncode([("Action", action), ("Version", Self.apiVersion)] + parameters).utf8)
        var attempt = 0
        while true {
            attempt += 1
            let failure: RPCError
            // Attempts share 90 % of the time left, so that the last failure
            // is reported (with its cause) before the caller's deadline.
            let left = deadline - .now
            let attemptDeadline = ContinuousClock.now + (left * 0.9) / (settings.maxAttempts - attempt + 1)
            do {
                return try await once(action, body: body, endpoint: endpoint, credentials: credentials, deadline: attemptDeadline)
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
        _ action: String, body: [UInt8], endpoint: EC2Endpoint, credentials: AWSCredentials, deadline: ContinuousClock.Instant
    ) async throws -> XMLTree {
        let headers = SigV4.sign(
            method: "POST", path: "/",
            headers: ["host": endpoint.hostHeader, "content-type": "application/x-www-form-urlencoded; charset=utf-8"],
            payload: body, service: "ec2", region: endpoint.region, credentials: credentials, date: Date()
        )
        var request = HTTPClientRequest(url: endpoint.url)
        request.method = .POST
        for (name, value) in headers { request.headers.replaceOrAdd(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let left = deadline - .now
        guard left > .zero else { throw RPCError(.deadlineExceeded, "\(action): no time left for EC2") }
        let response: HTTPClientResponse
        let data: ByteBuffer
        do {
            response = try await http.execute(request, timeout: .nanoseconds(left.totalNanoseconds))
            data = try await response.body.collect(upTo: 64 << 20)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            let text = scrub("\(error)", credentials)
            throw Retryable(error: RPCError(.unavailable, "\(action): cannot reach EC2 at \(endpoint.hostHeader): \(text)"))
        }
        let bytes = Data(data.readableBytesView)
        if (200..<300).contains(response.status.code) {
            guard let tree = XMLTree.parse(bytes) else {
                throw RPCError(.unavailable, "\(action): EC2 at \(endpoint.hostHeader) answered something that is not XML")
            }
            return tree
        }
        let (code, message) = Self.errorCode(bytes)
        let said = scrub(code.isEmpty ? "HTTP \(response.status.code)" : "\(code): \(message)", credentials)
        if response.status.code >= 500 || code == "InternalError" || code == "Unavailable" || code == "ServiceUnavailable" {
            throw Retryable(error: RPCError(.unavailable, "\(action): EC2 is unavailable (\(said))"))
        }
        throw Self.mapError(code: code, status: Int(response.status.code), said: "\(action): \(said)", retryAfter: settings.throttleRetryAfter)
    }

    /// `Errors/Error/Code` and `Message`, whatever the root element.
    static func errorCode(_ body: Data) -> (code: String, message: String) {
        guard let tree = XMLTree.parse(body), let error = tree.all(named: "Error").first(where: { $0.child("Code") != nil }) else {
            return ("", "")
        }
        return (error.string("Code"), error.string("Message"))
    }

    static let unauthenticated: Set<String> = [
        "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "RequestExpired",
        "InvalidAccessKeyId", "IncompleteSignature", "MissingAuthenticationToken", "UnrecognizedClientException",
    ]
    static let permissionDenied: Set<String> = ["UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "OptInRequired", "Blocked"]
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
    private func scrub(_ text: String, _ credentials: AWSCredentials) -> String {
        var text = text
        for secret in [credentials.secretKey, credentials.sessionToken ?? ""] where secret.count >= 4 {
            text = text.replacingOccurrences(of: secret, with: "[secret]")
        }
        return text
    }
}

extension Duration {
    var milliseconds: Int64 { totalNanoseconds / 1_000_000 }
}
