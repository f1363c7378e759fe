public import Core
public import Foundation
internal import CloudSupport
internal import SwiftProtobuf

/// An answer EC2, STS or the instance metadata service sent that cannot be
/// read: one line saying what is wrong with it, never a secret it held.
public struct EC2AnswerError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String

    init(_ description: String) {
        self.description = EC2Answers.oneLine(description)
    }
}

/// Temporary AWS keys from STS `AssumeRole` or the instance role: the
/// description names the access key id and the expiry, never the secret
/// key nor the session token.
public struct TemporaryCredentials: Sendable, CustomStringConvertible {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String
    public var expiration: Date

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String, expiration: Date) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
    }

    public var description: String {
        "temporary AWS credentials (access key \(accessKeyID), expiring \(EC2Answers.timestamp(expiration)))"
    }

    var keys: AWSCredentials {
        AWSCredentials(accessKey: accessKeyID, secretKey: secretAccessKey, sessionToken: sessionToken)
    }
}

/// Reading the answers of EC2's Query API (`Version=2016-11-15`), STS
/// (`2011-06-15`) and the instance metadata service into the provider
/// contract's messages (docs/DESIGN.md §7.2, proto/PROTOCOL.md). The backend
/// calls these; the `ec2-xml` fuzz target calls the same functions.
///
/// Every function either returns a well-formed result or throws exactly one
/// ``EC2AnswerError``: results are aligned with the ids asked, every found
/// status has a normalized state, every interface has a device index ≥ 0
/// and they are sorted by it, and no address is empty or repeated.
public enum EC2Answers {
    // MARK: - DescribeInstances

    /// One DescribeInstances page.
    public struct InstancesPage: Sendable {
        /// Per instance id its status (an id listed twice: the last wins).
        public var statuses: [String: ProviderV1.InstanceStatus]
        /// Empty on the last page.
        public var nextToken: String
    }

    public static func instancesPage(_ body: [UInt8]) throws(EC2AnswerError) -> InstancesPage {
        let root = try document(body, root: "DescribeInstancesResponse")
        var statuses: [String: ProviderV1.InstanceStatus] = [:]
        for reservation in root.items("reservationSet") {
            for instance in reservation.items("instancesSet") {
                let id = instance.string("instanceId")
                guard !id.isEmpty else { throw EC2AnswerError("DescribeInstances listed an instance without an instanceId") }
                guard !instance.string("instanceState", "name").isEmpty else {
                    throw EC2AnswerError("DescribeInstances listed instance \(clip(id)) without instanceState/name")
                }
                statuses[id] = status(instance)
            }
        }
        return InstancesPage(statuses: statuses, nextToken: root.string("nextToken"))
    }

    /// One result per asked id, in the same order: found with its status,
    /// or not found.
    public static func instanceResults(ids: [String], found: [String: ProviderV1.InstanceStatus]) -> [ProviderV1.InstanceResult] {
        ids.map { id in
            .with {
                $0.instanceID = id
                if let status = found[id] {
                    $0.found = true
                    $0.status = status
                }
            }
        }
    }

    /// One page read and aligned with `ids`.
    public static func instances(_ body: [UInt8], ids: [String]) throws(EC2AnswerError) -> [ProviderV1.InstanceResult] {
        instanceResults(ids: ids, found: try instancesPage(body).statuses)
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

    // MARK: - DescribeNetworkInterfaces and DescribeSubnets

    /// An ENI attached to an instance, as the contract's interface (its
    /// CIDRs are filled in from the subnet by ``interfaceResults``).
    public struct AttachedInterface: Sendable {
        public var instanceID: String
        public var interface: ProviderV1.NetworkInterface
    }

    /// One DescribeNetworkInterfaces page: the attached ENIs (an ENI that is
    /// not attached to an instance is left out).
    public struct NetworkInterfacesPage: Sendable {
        public var interfaces: [AttachedInterface]
        public var nextToken: String
    }

    public static func networkInterfacesPage(_ body: [UInt8]) throws(EC2AnswerError) -> NetworkInterfacesPage {
        let root = try document(body, root: "DescribeNetworkInterfacesResponse")
        var interfaces: [AttachedInterface] = []
        for eni in root.items("networkInterfaceSet") {
            let instanceID = eni.string("attachment", "instanceId")
            guard !instanceID.isEmpty else { continue }
            interfaces.append(AttachedInterface(instanceID: instanceID, interface: try interface(eni)))
        }
        return NetworkInterfacesPage(interfaces: interfaces, nextToken: root.string("nextToken"))
    }

    /// A subnet's CIDR blocks.
    public struct SubnetCIDRs: Sendable, Hashable {
        public var ipv4: String
        public var ipv6: String

        public init(ipv4: String, ipv6: String) {
            self.ipv4 = ipv4
            self.ipv6 = ipv6
        }
    }

    /// One DescribeSubnets page.
    public struct SubnetsPage: Sendable {
        public var subnets: [String: SubnetCIDRs]
        public var nextToken: String
    }

    public static func subnetsPage(_ body: [UInt8]) throws(EC2AnswerError) -> SubnetsPage {
        let root = try document(body, root: "DescribeSubnetsResponse")
        var subnets: [String: SubnetCIDRs] = [:]
        for subnet in root.items("subnetSet") {
            let id = subnet.string("subnetId")
            guard !id.isEmpty else { throw EC2AnswerError("DescribeSubnets listed a subnet without a subnetId") }
            let v6 = subnet.items("ipv6CidrBlockAssociationSet").map { $0.string("ipv6CidrBlock") }.first { !$0.isEmpty } ?? ""
            subnets[id] = SubnetCIDRs(ipv4: subnet.string("cidrBlock"), ipv6: v6)
        }
        return SubnetsPage(subnets: subnets, nextToken: root.string("nextToken"))
    }

    /// One result per asked id, in the same order, each found (EC2 lists an
    /// instance's interfaces: none is an answer, e.g. once terminated, not
    /// "not found"), with its interfaces sorted by device index (then ENI
    /// id), an ENI listed twice kept once, and the subnets' CIDRs filled in.
    public static func interfaceResults(
        ids: [String], interfaces: [AttachedInterface], subnets: [String: SubnetCIDRs]
    ) -> [ProviderV1.InstanceInterfaces] {
        var byInstance: [String: [ProviderV1.NetworkInterface]] = [:]
        var seen: Set<String> = []
        for attached in interfaces where seen.insert(attached.interface.providerID).inserted {
            var interface = attached.interface
            if let cidrs = subnets[interface.providerSubnetID] {
                interface.cidr = cidrs.ipv4
                for index in interface.addresses.indices {
                    switch interface.addresses[index].type {
                    case .ipv4: interface.addresses[index].cidr = cidrs.ipv4
                    case .ipv6: interface.addresses[index].cidr = cidrs.ipv6
                    default: break
                    }
                }
            }
            byInstance[attached.instanceID, default: []].append(interface)
        }
        return ids.map { id in
            .with {
                $0.instanceID = id
                $0.found = true
                $0.interfaces = (byInstance[id] ?? []).sorted {
                    ($0.deviceIndex, $0.providerID) < ($1.deviceIndex, $1.providerID)
                }
            }
        }
    }

    /// One DescribeNetworkInterfaces page read and aligned with `ids`.
    public static func networkInterfaces(
        _ body: [UInt8], subnets: [String: SubnetCIDRs], ids: [String]
    ) throws(EC2AnswerError) -> [ProviderV1.InstanceInterfaces] {
        interfaceResults(ids: ids, interfaces: try networkInterfacesPage(body).interfaces, subnets: subnets)
    }

    /// One ENI: every private IPv4 (primary first) and IPv6 address, then
    /// its private DNS names as cloud-local hostnames; the public and
    /// Elastic IPs NATed to it as shadow addresses, each followed by its
    /// public DNS name. No address is empty or repeated.
    static func interface(_ eni: XMLTree) throws(EC2AnswerError) -> ProviderV1.NetworkInterface {
        let id = eni.string("networkInterfaceId")
        guard !id.isEmpty else { throw EC2AnswerError("DescribeNetworkInterfaces listed an attached ENI without a networkInterfaceId") }
        let indexText = eni.string("attachment", "deviceIndex")
        guard let deviceIndex = Int32(indexText), deviceIndex >= 0 else {
            throw EC2AnswerError("ENI \(clip(id)) has device index \"\(clip(indexText))\", not a number ≥ 0")
        }
        typealias Private = (value: String, primary: Bool, dns: String, publicIP: String, publicDNS: String)
        // Every private IPv4, primary first (the set lists them all; an
        // answer without the set still names the primary one).
        var privates: [Private] = eni.items("privateIpAddressesSet").map {
            ($0.string("privateIpAddress"), $0.string("primary") == "true", $0.string("privateDnsName"),
             $0.string("association", "publicIp"), $0.string("association", "publicDnsName"))
        }
        if privates.isEmpty, !eni.string("privateIpAddress").isEmpty {
            privates = [(eni.string("privateIpAddress"), true, eni.string("privateDnsName"), "", "")]
        }
        privates = privates.filter(\.primary) + privates.filter { !$0.primary }

        var addresses = AddressList()
        var hostnames = AddressList()
        var shadows = AddressList()
        for item in privates {
            addresses.add(item.value, .ipv4, .cloudLocal)
            hostnames.add(item.dns, .hostname, .cloudLocal)
            shadows.add(item.publicIP, .ipv4, .public)
            shadows.add(item.publicDNS, .hostname, .public)
        }
        for item in eni.items("ipv6AddressesSet") {
            addresses.add(item.string("ipv6Address"), .ipv6, .public)
        }
        hostnames.add(eni.string("privateDnsName"), .hostname, .cloudLocal)
        shadows.add(eni.string("association", "publicIp"), .ipv4, .public)
        shadows.add(eni.string("association", "publicDnsName"), .hostname, .public)
        let status = eni.string("status")
        return .with {
            $0.deviceIndex = deviceIndex
            $0.macAddress = eni.string("macAddress")
            $0.providerID = id
            $0.providerSubnetID = eni.string("subnetId")
            $0.providerNetworkID = eni.string("vpcId")
            $0.addresses = addresses.list + hostnames.list.filter { hostname in !addresses.list.contains { $0.value == hostname.value } }
            $0.shadowAddresses = shadows.list
            $0.primary = deviceIndex == 0
            $0.disabled = status != "in-use" && !status.isEmpty
        }
    }

    /// Addresses in order, an empty value or one already there left out.
    struct AddressList {
        var list: [ProviderV1.Address] = []
        private var seen: Set<String> = []

        mutating func add(_ value: String, _ type: ProviderV1.AddressType, _ scope: ProviderV1.AddressScope) {
            guard !value.isEmpty, seen.insert(value).inserted else { return }
            list.append(.with { $0.value = value; $0.type = type; $0.scope = scope })
        }
    }

    // MARK: - Errors

    /// An AWS error document's first `Error` with a `Code` (EC2's
    /// `Response/Errors/Error`, STS's and IAM's `ErrorResponse/Error`).
    public struct ErrorDocument: Sendable, Equatable {
        public var code: String
        /// On one line.
        public var message: String
    }

    public static func error(_ body: [UInt8]) throws(EC2AnswerError) -> ErrorDocument {
        guard let tree = try? xml(body) else { throw EC2AnswerError("the error answer is not XML") }
        guard let error = tree.all(named: "Error").first(where: { !$0.string("Code").isEmpty }) else {
            throw EC2AnswerError("the error answer has no Error/Code")
        }
        return ErrorDocument(code: oneLine(error.string("Code"), limit: 100), message: oneLine(error.string("Message")))
    }

    // MARK: - STS and the instance metadata service

    /// STS `AssumeRole`'s answer: `AssumeRoleResult/Credentials`.
    public static func assumeRole(_ body: [UInt8]) throws(EC2AnswerError) -> TemporaryCredentials {
        let root = try document(body, root: "AssumeRoleResponse")
        guard let credentials = root["AssumeRoleResult", "Credentials"] else {
            throw EC2AnswerError("the AssumeRole answer has no AssumeRoleResult/Credentials")
        }
        var fields: [String] = []
        for name in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
            let value = credentials.string(name)
            guard !value.isEmpty else { throw EC2AnswerError("the AssumeRole answer has no Credentials/\(name)") }
            fields.append(value)
        }
        let expiration = try date(credentials.string("Expiration"), "the AssumeRole answer's Credentials/Expiration")
        return TemporaryCredentials(accessKeyID: fields[0], secretAccessKey: fields[1], sessionToken: fields[2], expiration: expiration)
    }

    /// The instance metadata service's role credentials, a JSON object with
    /// `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration` and a `Code`
    /// that, when present, must be `Success`.
    public static func instanceRoleCredentials(_ body: [UInt8]) throws(EC2AnswerError) -> TemporaryCredentials {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)), let fields = object as? [String: Any] else {
            throw EC2AnswerError("the instance role credentials are not a JSON object")
        }
        if let code = fields["Code"] {
            guard let text = code as? String else { throw EC2AnswerError("the instance role credentials' Code is not a string") }
            guard text == "Success" else {
                let message = (fields["Message"] as? String).map { ": \(oneLine($0))" } ?? ""
                throw EC2AnswerError("the instance metadata service says \(clip(text))\(message)")
            }
        }
        var values: [String] = []
        for name in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
            guard let value = fields[name] as? String, !value.isEmpty else {
                throw EC2AnswerError("the instance role credentials have no \(name)")
            }
            values.append(value)
        }
        let expiration = try date(values[3], "the instance role credentials' Expiration")
        return TemporaryCredentials(accessKeyID: values[0], secretAccessKey: values[1], sessionToken: values[2], expiration: expiration)
    }

    /// The role names `iam/security-credentials/` lists, one a line.
    public static func roleNames(_ body: [UInt8]) -> [String] {
        String(decoding: body, as: UTF8.self).split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    // MARK: - Helpers

    /// The document's root, which must be `root`.
    static func document(_ body: [UInt8], root: String) throws(EC2AnswerError) -> XMLTree {
        let tree = try xml(body)
        guard tree.name == root else { throw EC2AnswerError("expected a \(root), not <\(clip(tree.name))>") }
        return tree
    }

    /// `body` parsed, or why it cannot be (``XMLTree/read(_:)``: only
    /// plain UTF-8 XML reaches Foundation's parser, which ends the process
    /// on some other inputs; `Fuzz/regressions/ec2-xml/`).
    static func xml(_ body: [UInt8]) throws(EC2AnswerError) -> XMLTree {
        do {
            return try XMLTree.read(Data(body))
        } catch {
            throw EC2AnswerError("the answer \(error.problem)")
        }
    }

    /// An ISO 8601 time such as `2026-11-28T01:18:43Z`, with any number of
    /// fractional second digits (STS sends up to six).
    static func date(_ text: String, _ place: String) throws(EC2AnswerError) -> Date {
        var whole = text
        var fraction = 0.0
        if let dot = text.firstIndex(of: ".") {
            let digits = text[text.index(after: dot)...].prefix { $0.isASCII && $0.isNumber }
            if !digits.isEmpty, digits.count <= 9, let value = Double("0." + digits) {
                fraction = value
                whole = String(text[..<dot]) + String(text[digits.endIndex...])
            }
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        guard let date = formatter.date(from: whole) else {
            throw EC2AnswerError("\(place) \"\(clip(text))\" is not an ISO 8601 time")
        }
        return date.addingTimeInterval(fraction)
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }

    /// `text` on one line (control characters and line breaks become
    /// spaces), at most `limit` characters.
    static func oneLine(_ text: String, limit: Int = 500) -> String {
        var out = ""
        for character in text {
            if out.count >= limit {
                out += "…"
                break
            }
            out.append(character.isNewline || character.unicodeScalars.contains { $0.properties.generalCategory == .control } ? " " : character)
        }
        return out
    }

    /// A value quoted in a message: one line, at most 80 characters.
    static func clip(_ text: String) -> String { oneLine(text, limit: 80) }
}
