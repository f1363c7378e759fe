internal import Core
internal import EC2Provider

/// The answers the ec2 backend reads from outside (``EC2Answers``): EC2's
/// XML pages, an AWS error document, STS `AssumeRole`'s answer and the
/// instance metadata service's JSON keys.
///
/// The first byte picks the kind of answer (its value modulo the number of
/// kinds, see ``Kind``); the rest is the body. Properties: a body is either
/// read into a well-formed result — aligned with the ids asked, every found
/// status with a normalized state, interfaces with device indexes ≥ 0 and
/// sorted by them, no address empty or repeated, keys with every part —
/// or refused with one ``EC2AnswerError`` whose description is one line.
enum EC2XMLTarget {
    enum Kind: UInt8, CaseIterable {
        case instances, networkInterfaces, subnets, error, assumeRole, instanceRole
    }

    static func run(_ input: [UInt8]) throws(FuzzPropertyViolation) {
        guard let selector = input.first else { return }
        let kind = Kind(rawValue: selector % UInt8(Kind.allCases.count))!
        let body = Array(input.dropFirst())
        do {
            switch kind {
            case .instances: try instances(body)
            case .networkInterfaces: try networkInterfaces(body)
            case .subnets:
                let page = try EC2Answers.subnetsPage(body)
                if page.subnets.keys.contains("") { throw violation("read a subnet without an id") }
            case .error:
                let document = try EC2Answers.error(body)
                if document.code.isEmpty { throw violation("read an error document without a code") }
                if !isOneLine(document.code) || !isOneLine(document.message) {
                    throw violation("the error's code or message spans lines: \(document.code.debugDescription)")
                }
            case .assumeRole: try keys(EC2Answers.assumeRole(body))
            case .instanceRole: try keys(EC2Answers.instanceRoleCredentials(body))
            }
        } catch let error as EC2AnswerError {
            guard !error.description.isEmpty, isOneLine(error.description) else {
                throw violation("\(kind): the error is not one line: \(error.description.debugDescription)")
            }
        } catch let violation as FuzzPropertyViolation {
            throw violation
        } catch {
            throw violation("\(kind): threw \(type(of: error)), not an EC2AnswerError: \(error)")
        }
    }

    static func violation(_ text: String) -> FuzzPropertyViolation { FuzzPropertyViolation(.ec2XML, text) }

    static func isOneLine(_ text: String) -> Bool {
        !text.contains { $0.isNewline || $0.unicodeScalars.contains { $0.properties.generalCategory == .control } }
    }

    /// Asks for every id the page lists, one it does not, an empty one and
    /// a repeated one.
    private static func instances(_ body: [UInt8]) throws -> Void {
        let page = try EC2Answers.instancesPage(body)
        let listed = page.statuses.keys.sorted()
        let ids = listed + ["i-not-listed-anywhere", ""] + listed.prefix(1)
        let results = try EC2Answers.instances(body, ids: ids)
        guard results.map(\.instanceID) == ids else { throw violation("the instance results are not aligned with the ids asked") }
        for result in results {
            guard result.found == (page.statuses[result.instanceID] != nil) else {
                throw violation("instance \(result.instanceID.debugDescription) found is \(result.found), unlike the page")
            }
            guard !result.found || (result.status.state != .unspecified && !result.status.rawStatus.isEmpty) else {
                throw violation("instance \(result.instanceID.debugDescription) was found without a state")
            }
        }
    }

    private static func networkInterfaces(_ body: [UInt8]) throws -> Void {
        let page = try EC2Answers.networkInterfacesPage(body)
        var subnets: [String: EC2Answers.SubnetCIDRs] = [:]
        for attached in page.interfaces {
            subnets[attached.interface.providerSubnetID] = .init(ipv4: "10.0.0.0/24", ipv6: "2001:db8::/64")
        }
        let listed = Set(page.interfaces.map(\.instanceID)).sorted()
        let ids = listed + ["i-not-listed-anywhere", ""] + listed.prefix(1)
        let results = try EC2Answers.networkInterfaces(body, subnets: subnets, ids: ids)
        guard results.map(\.instanceID) == ids, results.allSatisfy(\.found) else {
            throw violation("the interface results are not aligned with the ids asked, each found")
        }
        for result in results {
            let indexes = result.interfaces.map(\.deviceIndex)
            guard indexes.allSatisfy({ $0 >= 0 }), indexes == indexes.sorted() else {
                throw violation("instance \(result.instanceID.debugDescription) has device indexes \(indexes)")
            }
            guard Set(result.interfaces.map(\.providerID)).count == result.interfaces.count,
                  result.interfaces.allSatisfy({ !$0.providerID.isEmpty })
            else { throw violation("instance \(result.instanceID.debugDescription) has an ENI twice or without an id") }
            for interface in result.interfaces {
                let all = interface.addresses + interface.shadowAddresses
                guard all.allSatisfy({ !$0.value.isEmpty && $0.type != .unspecified && $0.scope != .unspecified }) else {
                    throw violation("ENI \(interface.providerID) has an empty or untyped address")
                }
                guard Set(interface.addresses.map(\.value)).count == interface.addresses.count,
                      Set(interface.shadowAddresses.map(\.value)).count == interface.shadowAddresses.count
                else { throw violation("ENI \(interface.providerID) lists an address twice") }
                if let last = interface.addresses.lastIndex(where: { $0.type != .hostname }),
                   interface.addresses[..<last].contains(where: { $0.type == .hostname })
                {
                    throw violation("ENI \(interface.providerID) lists a hostname before an IP address")
                }
            }
        }
    }

    private static func keys(_ credentials: TemporaryCredentials) throws(FuzzPropertyViolation) {
        guard !credentials.accessKeyID.isEmpty, !credentials.secretAccessKey.isEmpty, !credentials.sessionToken.isEmpty else {
            throw violation("read keys with an empty part")
        }
        let shown = credentials.description
        for secret in [credentials.secretAccessKey, credentials.sessionToken]
        where secret.count >= 8 && !credentials.accessKeyID.contains(secret) && shown.contains(secret) {
            throw violation("the keys' description shows a secret")
        }
    }
}
