internal import Core
internal import Crypto
public import Foundation
internal import Logging
internal import NIOConcurrencyHelpers

/// The credential types of the ec2 backend (`Credential.auth_type`) and
/// the attributes each takes (docs/DESIGN.md §7.2).
enum EC2AuthType: String, CaseIterable, Sendable {
    /// `access-key`, `secret-key`, optional `session-token`.
    case accessKey = "access-key"
    /// `access-key`, `secret-key` and `session-token`, all required.
    case sessionToken = "session-token"
    /// Base keys (`access-key`, `secret-key`, optional `session-token`)
    /// and `role-arn`; optional `external-id`, `session-name`,
    /// `duration-seconds`: the keys STS `AssumeRole` hands out.
    case assumeRole = "assume-role"
    /// No keys; optional `role`: the instance role's keys from the
    /// instance metadata service (IMDSv2).
    case instanceRole = "instance-role"

    var attributes: [String] {
        switch self {
        case .accessKey, .sessionToken: ["access-key", "secret-key", "session-token"]
        case .assumeRole: ["access-key", "secret-key", "session-token", "role-arn", "external-id", "session-name", "duration-seconds"]
        case .instanceRole: ["role"]
        }
    }

    static let known = allCases.map(\.rawValue).joined(separator: ", ")
}

/// What an STS `AssumeRole` call asks for.
struct AssumeRoleSpec: Sendable {
    var base: AWSCredentials
    var roleARN: String
    var externalID: String?
    var sessionName: String
    var durationSeconds: Int

    static let defaultSessionName = "instancepoller"
    static let durations = 900...43200
    static let defaultDuration = 3600
}

/// Where a credential's signing keys come from.
enum CredentialSource: Sendable {
    case keys(AWSCredentials)
    case assumeRole(AssumeRoleSpec)
    /// The instance role, or the one named.
    case instanceRole(role: String?)

    /// Reads `credential` by its auth type.
    ///
    /// - Throws: Unauthenticated with one line naming the credential and
    ///   what is wrong (an unknown type lists the known ones); never an
    ///   attribute's value.
    static func parse(_ credential: ProviderV1.Credential) throws(RPCError) -> CredentialSource {
        guard let type = EC2AuthType(rawValue: credential.authType) else {
            let shown = credential.authType.isEmpty ? "no auth type" : "auth type \"\(EC2Answers.clip(credential.authType))\""
            throw RPCError(.unauthenticated, "credential \(credential.name) has \(shown); the ec2 backend knows \(EC2AuthType.known)")
        }
        let attributes = credential.attributes.filter { !$0.value.isEmpty }
        let place = "credential \(credential.name) (\(type.rawValue))"
        if let unknown = attributes.keys.sorted().first(where: { !type.attributes.contains($0) }) {
            throw RPCError(
                .unauthenticated,
                "\(place) has attribute \"\(EC2Answers.clip(unknown))\", which \(type.rawValue) does not take; it takes \(type.attributes.joined(separator: ", "))"
            )
        }
        func required(_ names: String...) throws(RPCError) {
            let missing = names.filter { attributes[$0] == nil }
            guard missing.isEmpty else {
                throw RPCError(.unauthenticated, "\(place) needs attribute\(missing.count == 1 ? "" : "s") \(missing.joined(separator: " and "))")
            }
        }
        func keys() -> AWSCredentials {
            AWSCredentials(accessKey: attributes["access-key"]!, secretKey: attributes["secret-key"]!, sessionToken: attributes["session-token"])
        }
        switch type {
        case .accessKey:
            try required("access-key", "secret-key")
            return .keys(keys())
        case .sessionToken:
            try required("access-key", "secret-key", "session-token")
            return .keys(keys())
        case .assumeRole:
            try required("access-key", "secret-key", "role-arn")
            var duration = AssumeRoleSpec.defaultDuration
            if let text = attributes["duration-seconds"] {
                guard let value = Int(text), AssumeRoleSpec.durations.contains(value) else {
                    throw RPCError(.unauthenticated, "\(place): duration-seconds must be a whole number from 900 to 43200")
                }
                duration = value
            }
            return .assumeRole(AssumeRoleSpec(
                base: keys(), roleARN: attributes["role-arn"]!, externalID: attributes["external-id"],
                sessionName: attributes["session-name"] ?? AssumeRoleSpec.defaultSessionName, durationSeconds: duration
            ))
        case .instanceRole:
            return .instanceRole(role: attributes["role"])
        }
    }
}

/// When temporary keys are refreshed: once less than `margin` or less than
/// `fraction` of their lifetime (from when they were obtained to their
/// expiry) is left, whichever is more. The default, 5 minutes or 10 %,
/// refreshes one-hour AssumeRole keys 6 minutes before they expire and
/// 15-minute ones 5 minutes before.
public struct KeyRefresh: Sendable, Equatable {
    public var margin: Duration
    public var fraction: Double

    public init(margin: Duration = .seconds(300), fraction: Double = 0.1) {
        self.margin = margin
        self.fraction = fraction
    }

    /// Whether keys obtained at `obtained` that expire at `expiration` are
    /// still good to use at `now` without a refresh.
    public func isFresh(expiration: Date, obtained: Date, now: Date) -> Bool {
        let left = expiration.timeIntervalSince(now)
        let lifetime = max(0, expiration.timeIntervalSince(obtained))
        let threshold = max(Double(margin.totalNanoseconds) / 1e9, lifetime * fraction)
        return left > threshold
    }
}

/// Signing keys for a credential: static keys as they are; the keys of
/// STS `AssumeRole` and of the instance role obtained once, cached per
/// credential fingerprint, and obtained anew once ``KeyRefresh`` says so.
/// Callers that need the same keys while they are being obtained wait for
/// that one request.
final class KeySource: Sendable {
    private struct Cached: Sendable {
        var credentials: TemporaryCredentials
        var obtained: Date
    }

    private struct State: Sendable {
        var ready: [String: Cached] = [:]
        var pending: [String: Task<TemporaryCredentials, any Error>] = [:]
    }

    private let client: EC2Client
    private let metadata: InstanceMetadataClient
    let refresh: KeyRefresh
    private let now: @Sendable () -> Date
    private let state = NIOLockedValueBox(State())
    private let logger: Logger

    init(client: EC2Client, metadata: InstanceMetadataClient, refresh: KeyRefresh, now: @escaping @Sendable () -> Date, logger: Logger) {
        self.client = client
        self.metadata = metadata
        self.refresh = refresh
        self.now = now
        self.logger = logger
    }

    /// The keys to sign with for `source` (`credential` names it in logs).
    func keys(
        _ source: CredentialSource, credential: String, cloud: ProviderV1.CloudSpec, deadline: ContinuousClock.Instant?
    ) async throws -> AWSCredentials {
        switch source {
        case .keys(let keys):
            return keys
        case .assumeRole(let spec):
            let endpoint = try AWSEndpoint.sts(cloud)
            let key = "assume-role|" + Self.fingerprint([
                spec.base.accessKey, spec.base.secretKey, spec.base.sessionToken ?? "", spec.roleARN, spec.externalID ?? "",
                spec.sessionName, "\(spec.durationSeconds)", endpoint.url, endpoint.region,
            ])
            return try await temporary(key, credential: credential, kind: "assume-role") {
                try await self.assumeRole(spec, endpoint: endpoint, deadline: deadline)
            }.keys
        case .instanceRole(let role):
            let key = "instance-role|" + Self.fingerprint([role ?? "", metadata.endpoint.url])
            return try await temporary(key, credential: credential, kind: "instance-role") {
                try await self.metadata.credentials(role: role, deadline: deadline)
            }.keys
        }
    }

    /// Cached keys that are still fresh, else the answer of the one
    /// `obtain` in flight for `key`, else a new one's.
    func temporary(
        _ key: String, credential: String, kind: String, obtain: @escaping @Sendable () async throws -> TemporaryCredentials
    ) async throws -> TemporaryCredentials {
        let now = now()
        let refresh = refresh
        let (cached, task, started) = state.withLockedValue { state -> (TemporaryCredentials?, Task<TemporaryCredentials, any Error>?, Bool) in
            if let cached = state.ready[key], refresh.isFresh(expiration: cached.credentials.expiration, obtained: cached.obtained, now: now) {
                return (cached.credentials, nil, false)
            }
            if let pending = state.pending[key] { return (nil, pending, false) }
            let task = Task { try await obtain() }
            state.pending[key] = task
            return (nil, task, true)
        }
        if let cached { return cached }
        let result = await task!.result
        // The caller that started the request keeps (and logs) its answer;
        // the ones that waited for it take it as it is.
        guard started else { return try result.get() }
        let obtained = self.now()
        state.withLockedValue { state in
            state.pending[key] = nil
            if case .success(let credentials) = result {
                state.ready[key] = Cached(credentials: credentials, obtained: obtained)
                // Forget keys that have expired (credentials no longer used).
                state.ready = state.ready.filter { $0.value.credentials.expiration > obtained }
            }
        }
        let credentials = try result.get()
        logger.info("obtained temporary keys", metadata: [
            "credential": "\(credential)", "auth_type": "\(kind)", "access_key": "\(credentials.accessKeyID)",
            "expires": "\(EC2Answers.timestamp(credentials.expiration))",
        ])
        return credentials
    }

    /// STS `AssumeRole` with the base keys.
    private func assumeRole(_ spec: AssumeRoleSpec, endpoint: AWSEndpoint, deadline: ContinuousClock.Instant?) async throws -> TemporaryCredentials {
        var parameters = [
            ("RoleArn", spec.roleARN), ("RoleSessionName", spec.sessionName), ("DurationSeconds", "\(spec.durationSeconds)"),
        ]
        if let external = spec.externalID { parameters.append(("ExternalId", external)) }
        let body = try await client.call(
            "AssumeRole", parameters, service: .sts, endpoint: endpoint, credentials: spec.base, deadline: deadline
        )
        do {
            return try EC2Answers.assumeRole(body)
        } catch {
            throw RPCError(.unavailable, "AssumeRole: STS at \(endpoint.hostHeader) answered something unreadable: \(error)")
        }
    }

    /// A one-way fingerprint of `parts` (SHA-256, hex).
    static func fingerprint(_ parts: [String]) -> String {
        SHA256.hash(data: Data(parts.joined(separator: "\u{0}").utf8)).hex
    }
}
