import Core
import Foundation
import SwiftProtobuf
import Testing
import TestSupport
@testable import EC2Provider

/// ``EC2Answers`` on answers captured from moto (the `ec2-xml` fuzz
/// target's seeds, `Fuzz/corpus/ec2-xml`, whose first byte is the target's
/// selector) and on hand-made edge cases.
@Suite("EC2 answers units")
struct EC2AnswersTests {
    /// A captured answer, without the fuzz selector byte.
    static func captured(_ name: String) throws -> [UInt8] {
        let path = "\(BuiltProducts.repositoryRoot)/Fuzz/corpus/ec2-xml/\(name)"
        let data = try #require(FileManager.default.contents(atPath: path), "\(path) is committed")
        return Array(data.dropFirst())
    }

    static func oneLine(_ text: String) -> Bool { !text.contains { $0.isNewline } }

    @Test func aDescribeInstancesPageGivesStatusesAndTheNextToken() throws {
        let page = try EC2Answers.instancesPage(Self.captured("describe-instances-next-token"))
        #expect(page.statuses.count == 5, "MaxResults 5")
        #expect(page.nextToken.hasPrefix("r-"))
        for status in page.statuses.values {
            #expect(status.state == EC2Answers.state(status.rawStatus) && status.state != .unknown, "\(status.rawStatus)")
        }
        #expect(page.statuses.values.contains { $0.state == .running })
        let ids = page.statuses.keys.sorted()
        let results = try EC2Answers.instances(Self.captured("describe-instances-next-token"), ids: ["i-unknown"] + ids)
        #expect(results.map(\.instanceID) == ["i-unknown"] + ids)
        #expect(results.map(\.found) == [false] + ids.map { _ in true })
    }

    /// moto's answer for instance "multi" (an Elastic IP with its public DNS
    /// name, no private DNS names on a subnet it created) and fleet
    /// instances in the default VPC (private DNS names, public IPs with
    /// public DNS names).
    @Test func dnsNamesBecomeHostnameAddressesAfterTheInterfacesIPs() throws {
        let page = try EC2Answers.networkInterfacesPage(Self.captured("describe-network-interfaces"))
        let byID = Dictionary(uniqueKeysWithValues: page.interfaces.map { ($0.interface.providerID, $0.interface) })

        let multi = try #require(byID["eni-f8b59340bbad7a5bb"])
        #expect(multi.addresses.map(\.value) == ["10.20.1.10", "10.20.1.11", "10.20.1.12", "2400:6500:bfed:1500:74fb:2256:7c0a:ae49"])
        #expect(multi.shadowAddresses.map(\.value) == ["127.175.153.161", "ip-127-175-153-161.ec2.internal"])
        #expect(multi.shadowAddresses.map(\.type) == [.ipv4, .hostname])
        #expect(multi.shadowAddresses.allSatisfy { $0.scope == .public })

        let fleet = try #require(byID["eni-7a07272aabd0a57f1"])
        #expect(fleet.addresses.map(\.value) == ["10.112.227.234", "ip-10-112-227-234.ec2.internal"], "the DNS name once, after the IP")
        #expect(fleet.addresses.map(\.type) == [.ipv4, .hostname])
        #expect(fleet.addresses.map(\.scope) == [.cloudLocal, .cloudLocal])
        #expect(fleet.shadowAddresses.map(\.value) == ["54.214.48.84", "ip-54-214-48-84.ec2.internal"])
        #expect(fleet.shadowAddresses.map(\.type) == [.ipv4, .hostname])

        let privateOnly = try #require(byID["eni-23e251064ca6acfca"])
        #expect(privateOnly.addresses.map(\.value) == ["10.97.70.43", "ip-10-97-70-43.ec2.internal"])
        #expect(privateOnly.shadowAddresses.isEmpty)

        let second = try #require(byID["eni-9e765705325488a81"])
        #expect(second.deviceIndex == 1 && !second.primary)
        #expect(second.addresses.map(\.value) == ["10.20.2.10"] && second.shadowAddresses.isEmpty, "no empty values")

        let subnets = try EC2Answers.subnetsPage(Self.captured("describe-subnets")).subnets
        let results = EC2Answers.interfaceResults(ids: ["i-14551cae8852ae85d"], interfaces: page.interfaces, subnets: subnets)
        let interfaces = try #require(results.first?.interfaces)
        #expect(interfaces.map(\.deviceIndex) == [0, 1])
        #expect(interfaces.allSatisfy { !$0.cidr.isEmpty })
        #expect(interfaces[0].addresses.filter { $0.type == .hostname }.allSatisfy { $0.cidr.isEmpty }, "a hostname has no CIDR")
    }

    @Test func hostnamesAreListedOnceEachInTheirOrder() throws {
        let xml = """
            <DescribeNetworkInterfacesResponse><networkInterfaceSet><item>
            <networkInterfaceId>eni-1</networkInterfaceId><status>in-use</status>
            <attachment><instanceId>i-1</instanceId><deviceIndex>0</deviceIndex></attachment>
            <privateDnsName>ip-10-0-0-5.ec2.internal</privateDnsName>
            <association><publicIp>203.0.113.9</publicIp><publicDnsName>ec2-203-0-113-9.compute-1.amazonaws.com</publicDnsName></association>
            <privateIpAddressesSet>
              <item><privateIpAddress>10.0.0.6</privateIpAddress><primary>false</primary><privateDnsName>ip-10-0-0-6.ec2.internal</privateDnsName>
                <association><publicIp>203.0.113.6</publicIp><publicDnsName></publicDnsName></association></item>
              <item><privateIpAddress>10.0.0.5</privateIpAddress><primary>true</primary><privateDnsName>ip-10-0-0-5.ec2.internal</privateDnsName>
                <association><publicIp>203.0.113.9</publicIp><publicDnsName>ec2-203-0-113-9.compute-1.amazonaws.com</publicDnsName></association></item>
              <item><privateIpAddress></privateIpAddress><primary>false</primary></item>
            </privateIpAddressesSet>
            <ipv6AddressesSet><item><ipv6Address>2001:db8::5</ipv6Address></item></ipv6AddressesSet></item>
            </networkInterfaceSet></DescribeNetworkInterfacesResponse>
            """
        let interface = try #require(try EC2Answers.networkInterfacesPage(Array(xml.utf8)).interfaces.first?.interface)
        #expect(interface.addresses.map(\.value) == [
            "10.0.0.5", "10.0.0.6", "2001:db8::5", "ip-10-0-0-5.ec2.internal", "ip-10-0-0-6.ec2.internal",
        ])
        #expect(interface.shadowAddresses.map(\.value) == ["203.0.113.9", "ec2-203-0-113-9.compute-1.amazonaws.com", "203.0.113.6"])
    }

    @Test func errorDocumentsOfEC2AndSTSAreRead() throws {
        #expect(try EC2Answers.error(Self.captured("error-ec2-auth-failure")).code == "AuthFailure")
        let denied = try EC2Answers.error(Self.captured("error-sts-access-denied"))
        #expect(denied.code == "AccessDenied")
        #expect(denied.message == "User: arn:aws:iam::123456789012:user/assumer is not authorized to perform: sts:AssumeRole")
        let multiline = "<Response><Errors><Error><Code>X</Code><Message>line one\nline two\r\n</Message></Error></Errors></Response>"
        #expect(try EC2Answers.error(Array(multiline.utf8)).message == "line one line two", "one line")
    }

    @Test func assumeRoleAndInstanceRoleKeysAreReadWithTheirExpiry() throws {
        let assumed = try EC2Answers.assumeRole(Self.captured("assume-role"))
        #expect(assumed.accessKeyID == "ASIARZPUZDIKE3QEAZQO")
        #expect(!assumed.secretAccessKey.isEmpty && !assumed.sessionToken.isEmpty)
        #expect(EC2Answers.timestamp(assumed.expiration) == "2026-11-28T01:18:43Z")
        #expect(abs(assumed.expiration.timeIntervalSince1970.truncatingRemainder(dividingBy: 1) - 0.378961) < 0.001, "six fraction digits")
        #expect(!"\(assumed)".contains(assumed.secretAccessKey) && !"\(assumed)".contains(assumed.sessionToken))

        let role = try EC2Answers.instanceRoleCredentials(Self.captured("instance-role-keys"))
        #expect(role.accessKeyID.hasPrefix("ASIA"))
        #expect(EC2Answers.timestamp(role.expiration) == "2026-11-28T06:22:33Z")
    }

    @Test(arguments: [
        ("{\"Code\":\"AssumeRoleUnauthorizedAccess\",\"Message\":\"no\\nway\"}", "the instance metadata service says AssumeRoleUnauthorizedAccess: no way"),
        ("{\"Code\":\"Success\",\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S-secret\",\"Token\":\"T\"}", "the instance role credentials have no Expiration"),
        ("{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S-secret\",\"Token\":\"T\",\"Expiration\":\"tomorrow\"}",
         "the instance role credentials' Expiration \"tomorrow\" is not an ISO 8601 time"),
        ("[1]", "the instance role credentials are not a JSON object"),
    ])
    func badInstanceRoleKeysAreRefusedWithoutTheSecret(json: String, message: String) {
        #expect(throws: EC2AnswerError(message)) { try EC2Answers.instanceRoleCredentials(Array(json.utf8)) }
    }

    @Test(arguments: [
        ("not xml at all", "the answer is not XML"),
        ("<Other/>", "expected a DescribeInstancesResponse, not <Other>"),
        ("<DescribeInstancesResponse><reservationSet><item><instancesSet><item><instanceState><name>running</name></instanceState></item></instancesSet></item></reservationSet></DescribeInstancesResponse>",
         "DescribeInstances listed an instance without an instanceId"),
        ("<DescribeInstancesResponse><reservationSet><item><instancesSet><item><instanceId>i-1</instanceId></item></instancesSet></item></reservationSet></DescribeInstancesResponse>",
         "DescribeInstances listed instance i-1 without instanceState/name"),
    ])
    func aMalformedInstancesPageIsRefusedInOneLine(xml: String, message: String) {
        #expect(throws: EC2AnswerError(message)) { try EC2Answers.instancesPage(Array(xml.utf8)) }
    }

    /// FoundationXML ends the process on an element name that is not UTF-8
    /// and on a processing instruction without data (found by the ec2-xml
    /// fuzz target): such answers never reach it.
    @Test func onlyUTF8ReachesTheXMLParser() throws {
        let trapped = try #require(FileManager.default.contents(
            atPath: "\(BuiltProducts.repositoryRoot)/Fuzz/regressions/ec2-xml/element-name-not-utf8-trapped-foundationxml"
        ))
        #expect(throws: EC2AnswerError("the error answer is not XML")) { try EC2Answers.error(Array(trapped.dropFirst())) }
        #expect(throws: EC2AnswerError("the answer is not UTF-8")) { try EC2Answers.instancesPage([0x3C, 0x41, 0xFF, 0x3E, 0x3C, 0x2F, 0x41, 0x3E]) }
        let latin1 = "<?xml version=\"1.0\" encoding='ISO-8859-1'?><DescribeSubnetsResponse/>"
        #expect(throws: EC2AnswerError("the answer declares the encoding \"ISO-8859-1\", not UTF-8")) { try EC2Answers.subnetsPage(Array(latin1.utf8)) }
        let utf8 = "\u{FEFF}<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeSubnetsResponse><!-- x --><note><![CDATA[a<b]]></note><nextToken>t-1</nextToken></DescribeSubnetsResponse>"
        #expect(try EC2Answers.subnetsPage(Array(utf8.utf8)).nextToken == "t-1", "a comment and CDATA are fine")
        // A processing instruction without data made FoundationXML read a null pointer.
        let instruction = "<?xml version=\"1.0\"?>\n<ErrorResponse><?x?></ErrorResponse>"
        #expect(throws: EC2AnswerError("the answer has a processing instruction other than the XML declaration")) { try EC2Answers.instancesPage(Array(instruction.utf8)) }
        let named = "<?xmlstylesheet?><ErrorResponse/>"
        #expect(throws: EC2AnswerError("the answer has a processing instruction other than the XML declaration")) {
            try EC2Answers.instancesPage(Array(named.utf8))
        }
        let doctype = "<!DOCTYPE r [<!ENTITY e \"x\">]><DescribeSubnetsResponse>&e;</DescribeSubnetsResponse>"
        #expect(throws: EC2AnswerError("the answer has a document type or other declaration")) { try EC2Answers.subnetsPage(Array(doctype.utf8)) }
    }

    @Test func aNegativeOrMissingDeviceIndexIsRefused() {
        let xml = { (index: String) in
            "<DescribeNetworkInterfacesResponse><networkInterfaceSet><item><networkInterfaceId>eni-1</networkInterfaceId><attachment><instanceId>i-1</instanceId>\(index)</attachment></item></networkInterfaceSet></DescribeNetworkInterfacesResponse>"
        }
        #expect(throws: EC2AnswerError("ENI eni-1 has device index \"-1\", not a number ≥ 0")) {
            try EC2Answers.networkInterfacesPage(Array(xml("<deviceIndex>-1</deviceIndex>").utf8))
        }
        #expect(throws: EC2AnswerError("ENI eni-1 has device index \"\", not a number ≥ 0")) {
            try EC2Answers.networkInterfacesPage(Array(xml("").utf8))
        }
        let multiline = "<X>\n<Y/></X>"
        #expect(throws: EC2AnswerError("expected a DescribeSubnetsResponse, not <X>")) { try EC2Answers.subnetsPage(Array(multiline.utf8)) }
    }
}
