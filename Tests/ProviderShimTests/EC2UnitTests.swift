import Core
import Support
import Foundation
import ProviderShim
import SwiftProtobuf
import Testing
@testable import EC2Provider
import CloudSupport

/// The EC2 backend's pure parts: Signature V4 against AWS's published test
/// vector, endpoint rules, error-code mapping, state mapping, XML reading.
/// (EC2AnswersTests and EC2CredentialUnitTests hold the rest.)
@Suite("EC2 backend units")
struct EC2UnitTests {
    /// AWS Signature V4 test suite, "get-vanilla".
    @Test func signatureV4MatchesAWSsTestVector() throws {
        let date = try #require(ISO8601DateFormatter().date(from: "2015-08-30T12:36:00Z"))
        let headers = SigV4.sign(
            method: "GET", path: "/", headers: ["host": "example.amazonaws.com"], payload: [],
            service: "service", region: "us-east-1",
            credentials: AWSCredentials(accessKey: "AKIDEXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            date: date
        )
        #expect(headers["x-amz-date"] == "20150830T123600Z")
        #expect(headers["authorization"] == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    @Test func aSessionTokenIsSignedAndTheSecretNeverShows() throws {
        let credentials = AWSCredentials(accessKey: "AKID", secretKey: "very-secret", sessionToken: "token-123")
        let headers = SigV4.sign(method: "POST", path: "/", headers: ["host": "h"], payload: Array("a=b".utf8), service: "ec2", region: "eu-west-1", credentials: credentials, date: Date())
        #expect(headers["x-amz-security-token"] == "token-123")
        #expect(headers["authorization"]?.contains("SignedHeaders=host;x-amz-date;x-amz-security-token") == true)
        #expect(!"\(credentials)".contains("very-secret"))
        #expect(!headers.values.contains { $0.contains("very-secret") })
    }

    @Test func formEncodingIsRFC3986() {
        #expect(SigV4.formEncode([("Filter.1.Value.1", "i-1 2/+~")]) == "Filter.1.Value.1=i-1%202%2F%2B~")
    }

    @Test func endpointsAreHTTPSUnlessLoopback() throws {
        let aws = try AWSEndpoint.of(.with { $0.region = "eu-west-1" })
        #expect(aws.url == "https://ec2.eu-west-1.amazonaws.com/")
        let moto = try AWSEndpoint.of(.with { $0.region = "us-east-1"; $0.endpoint = "http://127.0.0.1:5000" })
        #expect(moto.url == "http://127.0.0.1:5000/")
        #expect(moto.hostHeader == "127.0.0.1:5000")
        #expect(throws: RPCError(.invalidArgument, "plain HTTP is allowed only for a loopback endpoint, not ec2.example.com; use https")) {
            try AWSEndpoint.of(.with { $0.region = "us-east-1"; $0.endpoint = "http://ec2.example.com" })
        }
        #expect(throws: RPCError(.invalidArgument, "the ec2 cloud spec needs a region, e.g. us-east-1")) {
            try AWSEndpoint.of(.with { $0.endpoint = "https://x" })
        }
    }

    @Test(arguments: [
        ("AuthFailure", 401, RPCStatusCode.unauthenticated), ("InvalidClientTokenId", 400, .unauthenticated),
        ("SignatureDoesNotMatch", 403, .unauthenticated), ("ExpiredToken", 400, .unauthenticated), ("RequestExpired", 400, .unauthenticated),
        ("UnauthorizedOperation", 403, .permissionDenied), ("AccessDenied", 403, .permissionDenied),
        ("RequestLimitExceeded", 503, .resourceExhausted), ("InvalidParameterValue", 400, .failedPrecondition),
    ])
    func errorCodesMapToTheContract(code: String, status: Int, expected: RPCStatusCode) {
        let error = EC2Client.mapError(code: code, status: status, said: "x", retryAfter: .seconds(2))
        #expect(error.code == expected)
        if expected == .resourceExhausted { #expect(error.retryAfter == .seconds(2)) }
    }

    @Test func theErrorCodeIsFoundWhateverTheRoot() {
        let ec2 = "<Response><Errors><Error><Code>AuthFailure</Code><Message>no</Message></Error></Errors><RequestID>1</RequestID></Response>"
        #expect(EC2Client.errorCode(Data(ec2.utf8)) == ("AuthFailure", "no"))
        let iam = "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>bad</Message></Error></ErrorResponse>"
        #expect(EC2Client.errorCode(Data(iam.utf8)) == ("InvalidClientTokenId", "bad"))
        #expect(EC2Client.errorCode(Data("not xml".utf8)) == ("", ""))
    }

    @Test(arguments: [
        ("pending", ProviderV1.InstanceState.allocating), ("running", .running), ("stopping", .stopped), ("stopped", .stopped),
        ("shutting-down", .terminated), ("terminated", .terminated), ("rebooting", .unknown),
    ])
    func statesAreNormalized(name: String, expected: ProviderV1.InstanceState) {
        #expect(EC2Answers.state(name) == expected)
    }

    @Test func anInterfaceKeepsEveryAddress() throws {
        let xml = """
            <item><networkInterfaceId>eni-1</networkInterfaceId><subnetId>subnet-1</subnetId><vpcId>vpc-1</vpcId>
            <macAddress>02:00:00:00:00:01</macAddress><status>in-use</status>
            <attachment><instanceId>i-1</instanceId><deviceIndex>0</deviceIndex></attachment>
            <association><publicIp>203.0.113.5</publicIp></association>
            <privateIpAddressesSet>
              <item><privateIpAddress>10.0.0.6</privateIpAddress><primary>false</primary></item>
              <item><privateIpAddress>10.0.0.5</privateIpAddress><primary>true</primary><association><publicIp>203.0.113.5</publicIp></association></item>
            </privateIpAddressesSet>
            <ipv6AddressesSet><item><ipv6Address>2001:db8::5</ipv6Address></item></ipv6AddressesSet></item>
            """
        let tree = try #require(XMLTree.parse(Data(xml.utf8)))
        let attached = EC2Answers.AttachedInterface(instanceID: "i-1", interface: try EC2Answers.interface(tree))
        let result = EC2Answers.interfaceResults(
            ids: ["i-1"], interfaces: [attached], subnets: ["subnet-1": .init(ipv4: "10.0.0.0/24", ipv6: "2001:db8::/64")]
        )
        let interface = try #require(result.first?.interfaces.first)
        #expect(interface.addresses.map(\.value) == ["10.0.0.5", "10.0.0.6", "2001:db8::5"], "primary first")
        #expect(interface.addresses.map(\.cidr) == ["10.0.0.0/24", "10.0.0.0/24", "2001:db8::/64"])
        #expect(interface.cidr == "10.0.0.0/24")
        #expect(interface.shadowAddresses.map(\.value) == ["203.0.113.5"], "one public IP, not repeated")
        #expect(interface.providerID == "eni-1" && interface.providerSubnetID == "subnet-1" && interface.providerNetworkID == "vpc-1")
        #expect(interface.primary && !interface.disabled)
    }
}
