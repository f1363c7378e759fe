public import Core
public import ProviderShim
internal import CloudSupport
public import Foundation
public import Logging
internal import NIOConcurrencyHelpers
internal import SwiftProtobuf

/// `provider-shim ec2`: the provider contract on Amazon EC2 (docs/DESIGN.md §7.2).
///
/// - Instances: DescribeInstances with an `instance-id` filter (unknown ids
///   are simply absent, unlike `InstanceId.N`), every page followed.
/// - NetworkInterfaces: DescribeNetworkInterfaces with
///   `attachment.instance-id`, plus DescribeSubnets for the subnets' CIDRs.
/// - ValidateCredential: the keys obtained (AssumeRole, the instance role),
///   then DescribeRegions, cached per credential fingerprint
///   (`credentialTTL`, default 5 min).
///
/// Credential types (`auth_type`): `access-key`, `session-token`,
/// `assume-role`, `instance-role` (see ``EC2AuthType``). Cloud spec:
/// `region` (required), `endpoint` (default
/// `https://ec2.<region>.amazonaws.com`; plain HTTP only on loopback), and
/// attributes `page-size` (MaxResults, 5–1000, default 1000) and
/// `sts-endpoint` (default `https://sts.<region>.amazonaws.com`).
public struct EC2Backend: ProviderBackend {
    private let client: EC2Client
    private let keys: KeySource
    private let credentialTTL: Duration
    private let cache = NIOLockedValueBox<[String: (valid: Bool, reason: String, at: ContinuousClock.Instant)]>([:])
    private let logger: Logger

    /// - Parameters:
    ///   - metadata: where the instance role's keys come from.
    ///   - refresh: when AssumeRole's and the instance role's keys are
    ///     obtained anew.
    ///   - now: the wall clock temporary keys' expiry is read on.
    public init(
        client: EC2Client,
        metadata: InstanceMetadataEndpoint = .standard,
        credentialTTL: Duration = .seconds(300),
        refresh: KeyRefresh = KeyRefresh(),
        now: @escaping @Sendable () -> Date = { Date() },
        logger: Logger
    ) {
        self.client = client
        self.keys = KeySource(
            client: client, metadata: InstanceMetadataClient(endpoint: metadata, http: client.http, logger: logger),
            refresh: refresh, now: now, logger: logger
        )
        self.credentialTTL = credentialTTL
        self.logger = logger
    }

    public var identity: ShimIdentity {
        ShimIdentity(name: "ec2", version: ProductVersion.current, cloudTypes: ["ec2"], capabilities: .with {
            $0.maxBatchSize = 200
            $0.credentialCache = true
        })
    }

    // MARK: - Credentials

    private static func expired(_ credential: ProviderV1.Credential) -> Bool {
        guard credential.expiresAtUnixNano != 0 else { return false }
        return Double(credential.expiresAtUnixNano) / 1e9 <= Date().timeIntervalSince1970
    }

    /// The validation cache's key: the auth type and a fingerprint of every
    /// attribute, and where the keys are checked.
    static func cacheKey(_ credential: ProviderV1.Credential, endpoint: AWSEndpoint, cloud: ProviderV1.CloudSpec) -> String {
        var parts = [credential.authType]
        for (name, value) in credential.attributes.sorted(by: { $0.key < $1.key }) { parts += [name, value] }
        parts += [endpoint.url, endpoint.region, cloud.attributes["sts-endpoint"] ?? ""]
        return KeySource.fingerprint(parts)
    }

    public func validateCredential(_ request: ProviderV1.ValidateCredentialRequest, context: RPCServerContext) async throws
        -> ProviderV1.ValidateCredentialResponse
    {
        let credential = request.credential
        if Self.expired(credential) {
            return .with { $0.valid = false; $0.reason = "credential \(credential.name) has expired" }
        }
        let source: CredentialSource
        do {
            source = try CredentialSource.parse(credential)
        } catch {
            return .with { $0.valid = false; $0.reason = error.message }
        }
        let endpoint = try AWSEndpoint.of(request.cloud)
        let key = Self.cacheKey(credential, endpoint: endpoint, cloud: request.cloud)
        if let cached = cache.withLockedValue({ $0[key] }), ContinuousClock.now - cached.at < credentialTTL {
            return .with { $0.valid = cached.valid; $0.reason = cached.reason; $0.cached = true }
        }
        let verdict: (valid: Bool, reason: String)
        do {
            let keys = try await keys.keys(source, credential: credential.name, cloud: request.cloud, deadline: context.deadline)
            _ = try await client.call("DescribeRegions", [("RegionName.1", endpoint.region)], endpoint: endpoint, credentials: keys, deadline: context.deadline)
            verdict = (true, "")
        } catch let error as RPCError where error.code == .unauthenticated || error.code == .permissionDenied {
            verdict = (false, error.message)
        }
        cache.withLockedValue { $0[key] = (verdict.valid, verdict.reason, .now) }
        return .with { $0.valid = verdict.valid; $0.reason = verdict.reason }
    }

    private func prepare(
        _ cloud: ProviderV1.CloudSpec, _ credential: ProviderV1.Credential, deadline: ContinuousClock.Instant?
    ) async throws -> (AWSEndpoint, AWSCredentials, Int) {
        if Self.expired(credential) { throw RPCError(.unauthenticated, "credential \(credential.name) has expired") }
        let endpoint = try AWSEndpoint.of(cloud)
        var pageSize = 1000
        if let text = cloud.attributes["page-size"] {
            guard let value = Int(text), (5...1000).contains(value) else {
                throw RPCError(.invalidArgument, "cloud attribute page-size must be a number from 5 to 1000, not \"\(EC2Answers.clip(text))\"")
            }
            pageSize = value
        }
        let source = try CredentialSource.parse(credential)
        let credentials = try await keys.keys(source, credential: credential.name, cloud: cloud, deadline: deadline)
        return (endpoint, credentials, pageSize)
    }

    /// Runs a Describe call with a filter over `values` (at most 200 per
    /// call, EC2's limit), following NextToken to the end; `read` reads each
    /// page and returns its next token.
    private func describeAll(
        _ action: String, filter: String, values: [String], pageSize: Int,
        endpoint: AWSEndpoint, credentials: AWSCredentials, deadline: ContinuousClock.Instant?,
        read: ([UInt8]) throws(EC2AnswerError) -> String
    ) async throws {
        var start = 0
        while start < values.count {
            let chunk = values[start..<min(start + 200, values.count)]
            start += chunk.count
            var token = ""
            repeat {
                var parameters: [(String, String)] = [("Filter.1.Name", filter)]
                for (index, value) in chunk.enumerated() { parameters.append(("Filter.1.Value.\(index + 1)", value)) }
                parameters.append(("MaxResults", "\(pageSize)"))
                if !token.isEmpty { parameters.append(("NextToken", token)) }
                let page = try await client.call(action, parameters, endpoint: endpoint, credentials: credentials, deadline: deadline)
                do {
                    token = try read(page)
                } catch {
                    throw RPCError(.unavailable, "\(action): EC2 at \(endpoint.hostHeader) answered something unreadable: \(error)")
                }
            } while !token.isEmpty
        }
    }

    // MARK: - Instances

    public func instances(_ request: ProviderV1.InstancesRequest, context: RPCServerContext) async throws -> ProviderV1.InstancesResponse {
        let (endpoint, credentials, pageSize) = try await prepare(request.cloud, request.credential, deadline: context.deadline)
        let ids = Array(Set(request.instanceIds.filter { !$0.isEmpty })).sorted()
        var found: [String: ProviderV1.InstanceStatus] = [:]
        if !ids.isEmpty {
            try await describeAll(
                "DescribeInstances", filter: "instance-id", values: ids, pageSize: pageSize,
                endpoint: endpoint, credentials: credentials, deadline: context.deadline
            ) { body throws(EC2AnswerError) in
                let page = try EC2Answers.instancesPage(body)
                found.merge(page.statuses) { _, new in new }
                return page.nextToken
            }
        }
        return .with { $0.results = EC2Answers.instanceResults(ids: request.instanceIds, found: found) }
    }

    // MARK: - Network interfaces

    public func networkInterfaces(_ request: ProviderV1.NetworkInterfacesRequest, context: RPCServerContext) async throws
        -> ProviderV1.NetworkInterfacesResponse
    {
        let (endpoint, credentials, pageSize) = try await prepare(request.cloud, request.credential, deadline: context.deadline)
        let ids = Array(Set(request.instanceIds.filter { !$0.isEmpty })).sorted()
        var interfaces: [EC2Answers.AttachedInterface] = []
        var subnets: [String: EC2Answers.SubnetCIDRs] = [:]
        if !ids.isEmpty {
            try await describeAll(
                "DescribeNetworkInterfaces", filter: "attachment.instance-id", values: ids, pageSize: pageSize,
                endpoint: endpoint, credentials: credentials, deadline: context.deadline
            ) { body throws(EC2AnswerError) in
                let page = try EC2Answers.networkInterfacesPage(body)
                interfaces += page.interfaces
                return page.nextToken
            }
            let subnetIDs = Array(Set(interfaces.map(\.interface.providerSubnetID).filter { !$0.isEmpty })).sorted()
            if !subnetIDs.isEmpty {
                try await describeAll(
                    "DescribeSubnets", filter: "subnet-id", values: subnetIDs, pageSize: pageSize,
                    endpoint: endpoint, credentials: credentials, deadline: context.deadline
                ) { body throws(EC2AnswerError) in
                    let page = try EC2Answers.subnetsPage(body)
                    subnets.merge(page.subnets) { _, new in new }
                    return page.nextToken
                }
            }
        }
        return .with { $0.results = EC2Answers.interfaceResults(ids: request.instanceIds, interfaces: interfaces, subnets: subnets) }
    }
}
