public import Core
public import ProviderShim
internal import CloudSupport
internal import Foundation
public import Logging
internal import NIOConcurrencyHelpers
internal import SwiftProtobuf

/// `provider-shim ec2`: the provider contract on Amazon EC2 (docs/DESIGN.md §7.2).
///
/// - Instances: DescribeInstances with an `instance-id` filter (unknown ids
///   are simply absent, unlike `InstanceId.N`), every page followed.
/// - NetworkInterfaces: DescribeNetworkInterfaces with
///   `attachment.instance-id`, plus DescribeSubnets for the subnets' CIDRs.
/// - ValidateCredential: DescribeRegions, cached per credential fingerprint
///   (`credentialTTL`, default 5 min).
///
/// Credential attributes: `access-key`, `secret-key`, optional
/// `session-token`. Cloud spec: `region` (required), `endpoint` (default
/// `https://ec2.<region>.amazonaws.com`; plain HTTP only on loopback), and
/// attribute `page-size` (MaxResults, 5–1000, default 1000).
public struct EC2Backend: ProviderBackend {
    private let client: EC2Client
    private let credentialTTL: Duration
    private let cache = NIOLockedValueBox<[String: (valid: Bool, reason: String, at: ContinuousClock.Instant)]>([:])
    private let logger: Logger

    public init(client: EC2Client, credentialTTL: Duration = .seconds(300), logger: Logger) {
        self.client = client
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

    static func credentials(_ credential: ProviderV1.Credential) throws(RPCError) -> AWSCredentials {
        let attributes = credential.attributes
        guard let access = attributes["access-key"], !access.isEmpty, let secret = attributes["secret-key"], !secret.isEmpty else {
            throw RPCError(.unauthenticated, "credential \(credential.name) needs attributes access-key and secret-key")
        }
        let token = attributes["session-token"].flatMap { $0.isEmpty ? nil : $0 }
        return AWSCredentials(accessKey: access, secretKey: secret, sessionToken: token)
    }

    private static func expired(_ credential: ProviderV1.Credential) -> Bool {
        guard credential.expiresAtUnixNano != 0 else { return false }
        return Double(credential.expiresAtUnixNano) / 1e9 <= Date().timeIntervalSince1970
    }

    public func validateCredential(_ request: ProviderV1.ValidateCredentialRequest, context: RPCServerContext) async throws
        -> ProviderV1.ValidateCredentialResponse
    {
        if Self.expired(request.credential) {
            return .with { $0.valid = false; $0.reason = "credential \(request.credential.name) has expired" }
        }
        let credentials: AWSCredentials
        do {
            credentials = try Self.credentials(request.credential)
        } catch {
            return .with { $0.valid = false; $0.reason = error.message }
        }
        let endpoint = try EC2Endpoint.of(request.cloud)
        let key = "\(credentials.fingerprint)@\(endpoint.url)#\(endpoint.region)"
        if let cached = cache.withLockedValue({ $0[key] }), ContinuousClock.now - cached.at < credentialTTL {
            return .with { $0.valid = cached.valid; $0.reason = cached.reason; $0.cached = true }
        }
        let verdict: (valid: Bool, reason: String)
        do {
            _ = try await client.call("DescribeRegions", [("RegionName.1", endpoint.region)], endpoint: endpoint, credentials: credentials, deadline: context.deadline)
            verdict = (true, "")
        } catch let error as RPCError where error.code == .unauthenticated || error.code == .permissionDenied {
            verdict = (false, error.message)
        }
        cache.withLockedValue { $0[key] = (verdict.valid, verdict.reason, .now) }
        return .with { $0.valid = verdict.valid; $0.reason = verdict.reason }
    }

    private func prepare(_ cloud: ProviderV1.CloudSpec, _ credential: ProviderV1.Credential) throws(RPCError) -> (EC2Endpoint, AWSCredentials, Int) {
        if Self.expired(credential) { throw RPCError(.unauthenticated, "credential \(credential.name) has expired") }
        let endpoint = try EC2Endpoint.of(cloud)
        let credentials = try Self.credentials(credential)
        var pageSize = 1000
        if let text = cloud.attributes["page-size"] {
            guard let value = Int(text), (5...1000).contains(value) else {
                throw RPCError(.invalidArgument, "cloud attribute page-size must be a number from 5 to 1000, not \"\(text)\"")
            }
            pageSize = value
        }
        return (endpoint, credentials, pageSize)
    }

    /// Runs a Describe call with a filter over `values` (at most 200 per
    /// call, EC2's limit), following NextToken to the end; returns every
    /// page's `itemsPath` items.
    private func describeAll(
        _ action: String, filter: String, values: [String], itemsPath: [String], pageSize: Int,
        endpoint: EC2Endpoint, credentials: AWSCredentials, deadline: ContinuousClock.Instant?
    ) async throws -> [XMLTree] {
        var items: [XMLTree] = []
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
                var node: XMLTree? = page
                for name in itemsPath.dropLast() { node = node?.child(name) }
                items += node?.items(itemsPath.last!) ?? []
                token = page.string("nextToken")
            } while !token.isEmpty
        }
        return items
    }

    // MARK: - Instances

    public func instances(_ request: ProviderV1.InstancesRequest, context: RPCServerContext) async throws -> ProviderV1.InstancesResponse {
        let (endpoint, credentials, pageSize) = try prepare(request.cloud, request.credential)
        let ids = Array(Set(request.instanceIds.filter { !$0.isEmpty })).sorted()
        var found: [String: ProviderV1.InstanceStatus] = [:]
        if !ids.isEmpty {
            let reservations = try await describeAll(
                "DescribeInstances", filter: "instance-id", values: ids, itemsPath: ["reservationSet"], pageSize: pageSize,
                endpoint: endpoint, credentials: credentials, deadline: context.deadline
            )
            for reservation in reservations {
                for instance in reservation.items("instancesSet") {
                    found[instance.string("instanceId")] = Self.status(instance)
                }
            }
        }
        return .with {
            $0.results = request.instanceIds.map { id in
                .with {
                    $0.instanceID = id
                    if let status = found[id] {
                        $0.found = true
                        $0.status = status
                    }
                }
            }
        }
    }

    /// EC2's state name, normalized; the state reason kept as the message.
    static func status(_ instance: XMLTree) -> ProviderV1.InstanceStatus {
        let name = instance.string("instanceState", "name")
        var message = instance.string("stateReason", "message")
        if message.isEmpty { message = instance.string("reason") }
        return .with {
            $0.state = state(name)
            $0.rawStatus = name
            $0.message = message
        }
    }

    static func state(_ name: String) -> ProviderV1.InstanceState {
        switch name {
        case "pending": .allocating
        case "running": .running
        case "stopping", "stopped": .stopped
        case "shutting-down", "terminated": .terminated
        default: .unknown
        }
    }

    // MARK: - Network interfaces

    public func networkInterfaces(_ request: ProviderV1.NetworkInterfacesRequest, context: RPCServerContext) async throws
        -> ProviderV1.NetworkInterfacesResponse
    {
        let (endpoint, credentials, pageSize) = try prepare(request.cloud, request.credential)
        let ids = Array(Set(request.instanceIds.filter { !$0.isEmpty })).sorted()
        var enis: [XMLTree] = []
        var subnets: [String: (v4: String, v6: String)] = [:]
        if !ids.isEmpty {
            enis = try await describeAll(
                "DescribeNetworkInterfaces", filter: "attachment.instance-id", values: ids, itemsPath: ["networkInterfaceSet"],
                pageSize: pageSize, endpoint: endpoint, credentials: credentials, deadline: context.deadline
            )
            let subnetIDs = Array(Set(enis.map { $0.string("subnetId") }.filter { !$0.isEmpty })).sorted()
            if !subnetIDs.isEmpty {
                for subnet in try await describeAll(
                    "DescribeSubnets", filter: "subnet-id", values: subnetIDs, itemsPath: ["subnetSet"], pageSize: pageSize,
                    endpoint: endpoint, credentials: credentials, deadline: context.deadline
                ) {
                    let v6 = subnet.items("ipv6CidrBlockAssociationSet").first.map { $0.string("ipv6CidrBlock") } ?? ""
                    subnets[subnet.string("subnetId")] = (subnet.string("cidrBlock"), v6)
                }
            }
        }
        var byInstance: [String: [ProviderV1.NetworkInterface]] = [:]
        for eni in enis {
            let instanceID = eni.string("attachment", "instanceId")
            guard !instanceID.isEmpty else { continue }
            byInstance[instanceID, default: []].append(Self.interface(eni, subnets[eni.string("subnetId")] ?? ("", "")))
        }
        return .with {
            $0.results = request.instanceIds.map { id in
                .with {
                    $0.instanceID = id
                    // EC2 lists an instance's interfaces: none is an answer
                    // (e.g. once terminated), not "not found".
                    $0.found = true
                    $0.interfaces = (byInstance[id] ?? []).sorted { $0.deviceIndex < $1.deviceIndex }
                }
            }
        }
    }

    /// One ENI: every private IPv4 (primary first) and IPv6 address, and the
    /// public and Elastic IPs NATed to it as shadow addresses.
    static func interface(_ eni: XMLTree, _ subnet: (v4: String, v6: String)) -> ProviderV1.NetworkInterface {
        // Every private IPv4, primary first (the set lists them all; an
        // answer without the set still names the primary one).
        var privates = eni.items("privateIpAddressesSet").map {
            (value: $0.string("privateIpAddress"), primary: $0.string("primary") == "true", publicIP: $0.string("association", "publicIp"))
        }
        if privates.isEmpty, !eni.string("privateIpAddress").isEmpty {
            privates = [(eni.string("privateIpAddress"), true, "")]
        }
        privates.sort { $0.primary && !$1.primary }
        var addresses: [ProviderV1.Address] = []
        var shadows: [ProviderV1.Address] = []
        var seenPublic: Set<String> = []
        func addPublic(_ value: String) {
            guard !value.isEmpty, seenPublic.insert(value).inserted else { return }
            shadows.append(.with { $0.value = value; $0.type = .ipv4; $0.scope = .public })
        }
        for item in privates {
            addresses.append(.with { $0.value = item.value; $0.type = .ipv4; $0.scope = .cloudLocal; $0.cidr = subnet.v4 })
            addPublic(item.publicIP)
        }
        for item in eni.items("ipv6AddressesSet") {
            let value = item.string("ipv6Address")
            guard !value.isEmpty else { continue }
            addresses.append(.with { $0.value = value; $0.type = .ipv6; $0.scope = .public; $0.cidr = subnet.v6 })
        }
        addPublic(eni.string("association", "publicIp"))
        let deviceIndex = Int32(eni.string("attachment", "deviceIndex")) ?? 0
        return .with {
            $0.deviceIndex = deviceIndex
            $0.macAddress = eni.string("macAddress")
            $0.providerID = eni.string("networkInterfaceId")
            $0.providerSubnetID = eni.string("subnetId")
            $0.providerNetworkID = eni.string("vpcId")
            $0.cidr = subnet.v4
            $0.addresses = addresses
            $0.shadowAddresses = shadows
            $0.primary = deviceIndex == 0
            $0.disabled = eni.string("status") != "in-use" && !eni.string("status").isEmpty
        }
    }
}
