import CloudSupport
import Core
import Foundation
import Logging
import Synchronization
import TestSupport
import SwiftProtobuf
import Testing
@testable import EC2Provider

/// The ec2 backend's credential types (docs/DESIGN.md §7.2): what each
/// auth type takes and refuses, when temporary keys are refreshed (on an
/// injected clock), and where STS and the metadata service are.
@Suite("EC2 credential units")
struct EC2CredentialUnitTests {
    static func credential(_ type: String, _ attributes: [String: String]) -> ProviderV1.Credential {
        .with { $0.name = "main"; $0.authType = type; $0.attributes = attributes }
    }

    static func refusal(_ type: String, _ attributes: [String: String]) -> RPCError? {
        do {
            _ = try CredentialSource.parse(credential(type, attributes))
            return nil
        } catch {
            return error
        }
    }

    @Test func eachAuthTypeReadsItsAttributes() throws {
        guard case .keys(let plain) = try CredentialSource.parse(Self.credential("access-key", ["access-key": "AKIA1", "secret-key": "s1"])) else {
            Issue.record("access-key is not static keys")
            return
        }
        #expect(plain.accessKey == "AKIA1" && plain.secretKey == "s1" && plain.sessionToken == nil)
        guard case .keys(let session) = try CredentialSource.parse(
            Self.credential("session-token", ["access-key": "ASIA1", "secret-key": "s1", "session-token": "t1"])
        ) else {
            Issue.record("session-token is not static keys")
            return
        }
        #expect(session.sessionToken == "t1")
        guard case .assumeRole(let spec) = try CredentialSource.parse(
            Self.credential("assume-role", ["access-key": "AKIA1", "secret-key": "s1", "role-arn": "arn:aws:iam::1:role/r"])
        ) else {
            Issue.record("assume-role is not AssumeRole")
            return
        }
        #expect(spec.roleARN == "arn:aws:iam::1:role/r" && spec.externalID == nil)
        #expect(spec.sessionName == "instancepoller" && spec.durationSeconds == 3600, "the defaults")
        guard case .assumeRole(let full) = try CredentialSource.parse(Self.credential("assume-role", [
            "access-key": "AKIA1", "secret-key": "s1", "session-token": "t0", "role-arn": "arn:r", "external-id": "x-1",
            "session-name": "poller-7", "duration-seconds": "900",
        ])) else {
            Issue.record("assume-role is not AssumeRole")
            return
        }
        #expect(full.base.sessionToken == "t0" && full.externalID == "x-1" && full.sessionName == "poller-7" && full.durationSeconds == 900)
        guard case .instanceRole(let role) = try CredentialSource.parse(Self.credential("instance-role", [:])), role == nil else {
            Issue.record("instance-role without a role")
            return
        }
        guard case .instanceRole(let named) = try CredentialSource.parse(Self.credential("instance-role", ["role": "web"])), named == "web" else {
            Issue.record("instance-role with a role")
            return
        }
    }

    @Test(arguments: [
        ("token", ["token": "x"], "credential main has auth type \"token\"; the ec2 backend knows access-key, session-token, assume-role, instance-role"),
        ("", ["access-key": "a", "secret-key": "s"], "credential main has no auth type; the ec2 backend knows access-key, session-token, assume-role, instance-role"),
        ("access-key", ["access-key": "a"], "credential main (access-key) needs attribute secret-key"),
        ("access-key", ["access-key": "a", "secret-key": ""], "credential main (access-key) needs attribute secret-key"),
        ("session-token", ["access-key": "a", "secret-key": "s"], "credential main (session-token) needs attribute session-token"),
        ("assume-role", ["access-key": "a", "secret-key": "s"], "credential main (assume-role) needs attribute role-arn"),
        ("assume-role", [:], "credential main (assume-role) needs attributes access-key and secret-key and role-arn"),
        ("assume-role", ["access-key": "a", "secret-key": "s", "role-arn": "r", "duration-seconds": "899"],
         "credential main (assume-role): duration-seconds must be a whole number from 900 to 43200"),
        ("assume-role", ["access-key": "a", "secret-key": "s", "role-arn": "r", "duration-seconds": "43201"],
         "credential main (assume-role): duration-seconds must be a whole number from 900 to 43200"),
        ("assume-role", ["access-key": "a", "secret-key": "s", "role-arn": "r", "duration-seconds": "1h"],
         "credential main (assume-role): duration-seconds must be a whole number from 900 to 43200"),
        ("access-key", ["access-key": "a", "secret-key": "s", "role-arn": "r"],
         "credential main (access-key) has attribute \"role-arn\", which access-key does not take; it takes access-key, secret-key, session-token"),
        ("instance-role", ["access-key": "a", "secret-key": "very-secret-value"],
         "credential main (instance-role) has attribute \"access-key\", which instance-role does not take; it takes role"),
    ])
    func aCredentialThatCannotWorkIsRefusedInOneLine(type: String, attributes: [String: String], message: String) throws {
        let error = try #require(Self.refusal(type, attributes))
        #expect(error.code == .unauthenticated)
        #expect(error.message == message)
        #expect(!error.message.contains("very-secret-value"))
    }

    /// Refresh once less than the margin (5 min) or 10 % of the lifetime is
    /// left, whichever is more, on an injected clock.
    @Test(arguments: [
        // lifetime, seconds since obtained, fresh?
        (3600.0, 0.0, true),
        (3600.0, 3239.0, true),   // 361 s left > max(300, 360)
        (3600.0, 3241.0, false),  // 359 s left
        (900.0, 599.0, true),     // 301 s left > max(300, 90)
        (900.0, 601.0, false),
        (43200.0, 38879.0, true), // 4321 s left > 4320 (10 %)
        (43200.0, 38881.0, false),
        (200.0, 0.0, false),      // shorter than the margin: used once, refreshed next time
        (3600.0, 4000.0, false),  // expired
    ])
    func temporaryKeysAreRefreshedBeforeTheyExpire(lifetime: Double, elapsed: Double, fresh: Bool) {
        let obtained = Date(timeIntervalSince1970: 1_800_000_000)
        let refresh = KeyRefresh()
        #expect(refresh.isFresh(expiration: obtained + lifetime, obtained: obtained, now: obtained + elapsed) == fresh)
    }

    @Test func theMarginIsASetting() {
        let obtained = Date(timeIntervalSince1970: 1_800_000_000)
        let wide = KeyRefresh(margin: .seconds(1200))
        #expect(!wide.isFresh(expiration: obtained + 900, obtained: obtained, now: obtained), "900 s keys with a 1200 s margin: always due")
        #expect(wide.isFresh(expiration: obtained + 3600, obtained: obtained, now: obtained + 2399))
        #expect(!wide.isFresh(expiration: obtained + 3600, obtained: obtained, now: obtained + 2401))
    }

    @Test func stsIsAtItsAttributeOrTheRegionsEndpoint() throws {
        let aws = try AWSEndpoint.sts(.with { $0.region = "eu-west-1" })
        #expect(aws.url == "https://sts.eu-west-1.amazonaws.com/")
        let moto = try AWSEndpoint.sts(.with { $0.region = "us-east-1"; $0.attributes = ["sts-endpoint": "http://127.0.0.1:5000"] })
        #expect(moto.url == "http://127.0.0.1:5000/" && moto.region == "us-east-1")
        #expect(throws: RPCError(.invalidArgument, "plain HTTP is allowed only for a loopback endpoint, not sts.example.com; use https")) {
            try AWSEndpoint.sts(.with { $0.region = "us-east-1"; $0.attributes = ["sts-endpoint": "http://sts.example.com"] })
        }
    }

    @Test(arguments: [
        ([String: String](), "http://169.254.169.254"),
        (["AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:5000/"], "http://127.0.0.1:5000"),
        (["AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://[fd00:ec2::254]"], "http://[fd00:ec2::254]"),
        (["AWS_EC2_METADATA_SERVICE_ENDPOINT": "https://metadata.example.com"], "https://metadata.example.com"),
    ])
    func theMetadataServiceIsWhereTheEnvironmentSays(environment: [String: String], url: String) throws {
        #expect(try InstanceMetadataEndpoint.fromEnvironment(environment).url == url)
    }

    @Test(arguments: [
        ("http://metadata.example.com", "plain http is allowed only to a link-local or loopback address, not metadata.example.com"),
        ("ftp://169.254.169.254", "the scheme must be http or https, not ftp"),
        ("169.254.169.254", "\"169.254.169.254\" is not a URL"),
        ("http://169.254.169.254/latest", "it has a path"),
    ])
    func aBadMetadataEndpointIsRefusedNamingTheVariable(text: String, problem: String) {
        #expect(throws: EnvironmentVariableError(
            variable: "AWS_EC2_METADATA_SERVICE_ENDPOINT", problem: "\(problem) (expected a URL such as http://169.254.169.254)"
        )) {
            try InstanceMetadataEndpoint.fromEnvironment(["AWS_EC2_METADATA_SERVICE_ENDPOINT": text])
        }
    }

    @Test func theValidationCacheKeyCoversTheTypeAndEveryAttribute() throws {
        let endpoint = try AWSEndpoint.of(.with { $0.region = "us-east-1" })
        let cloud = ProviderV1.CloudSpec.with { $0.region = "us-east-1" }
        let base = ["access-key": "a", "secret-key": "s", "role-arn": "arn:1"]
        let key = EC2Backend.cacheKey(Self.credential("assume-role", base), endpoint: endpoint, cloud: cloud)
        var other = base
        other["external-id"] = "x"
        let changed = [
            EC2Backend.cacheKey(Self.credential("access-key", base), endpoint: endpoint, cloud: cloud),
            EC2Backend.cacheKey(Self.credential("assume-role", base.merging(["role-arn": "arn:2"]) { $1 }), endpoint: endpoint, cloud: cloud),
            EC2Backend.cacheKey(Self.credential("assume-role", other), endpoint: endpoint, cloud: cloud),
            EC2Backend.cacheKey(Self.credential("assume-role", base), endpoint: endpoint, cloud: .with {
                $0.region = "us-east-1"; $0.attributes = ["sts-endpoint": "https://sts.example.com"]
            }),
        ]
        #expect(Set(changed + [key]).count == 5, "a change of type, attribute or STS endpoint is another cache entry")
        #expect(EC2Backend.cacheKey(Self.credential("assume-role", base), endpoint: endpoint, cloud: cloud) == key, "stable")
        #expect(key.count == 64 && key.allSatisfy(\.isHexDigit), "a SHA-256 fingerprint, not the attributes")
    }
}

/// ``KeySource``'s cache of temporary keys on an injected clock: kept while
/// fresh, obtained anew once due, one request for concurrent callers.
@Suite("EC2 temporary keys cache units")
struct EC2KeyCacheTests {
    final class Clock: Sendable {
        let now = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
        func advance(_ seconds: Double) { now.withLock { $0 += seconds } }
    }

    static func source(_ clock: Clock) -> (KeySource, CloudHTTPClient) {
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let http = CloudHTTPClient(proxies: .direct, logger: logger)
        let source = KeySource(
            client: EC2Client(http: http, logger: logger),
            metadata: InstanceMetadataClient(endpoint: .standard, http: http, logger: logger),
            refresh: KeyRefresh(), now: { clock.now.withLock { $0 } }, logger: logger
        )
        return (source, http)
    }

    @Test func keysAreKeptWhileFreshAndObtainedAnewOnceDue() async throws {
        let clock = Clock()
        let (source, http) = Self.source(clock)
        let calls = Mutex(0)
        let obtain: @Sendable () async throws -> TemporaryCredentials = {
            let number = calls.withLock { $0 += 1; return $0 }
            return TemporaryCredentials(
                accessKeyID: "ASIA\(number)", secretAccessKey: "s", sessionToken: "t", expiration: clock.now.withLock { $0 } + 3600
            )
        }
        #expect(try await source.temporary("k", credential: "main", kind: "assume-role", obtain: obtain).accessKeyID == "ASIA1")
        clock.advance(3000)  // 600 s left > max(300, 360)
        #expect(try await source.temporary("k", credential: "main", kind: "assume-role", obtain: obtain).accessKeyID == "ASIA1")
        #expect(try await source.temporary("other", credential: "other", kind: "assume-role", obtain: obtain).accessKeyID == "ASIA2",
                "another credential, other keys")
        clock.advance(300)  // 300 s left < 360: due
        #expect(try await source.temporary("k", credential: "main", kind: "assume-role", obtain: obtain).accessKeyID == "ASIA3")
        #expect(calls.withLock { $0 } == 3)
        try await http.shutdown()
    }

    @Test func concurrentCallersShareOneRequestAndAFailureIsNotKept() async throws {
        let clock = Clock()
        let (source, http) = Self.source(clock)
        let calls = Mutex(0)
        let (started, starting) = AsyncStream.makeStream(of: Void.self)
        let (release, releasing) = AsyncStream.makeStream(of: Void.self)
        let obtain: @Sendable () async throws -> TemporaryCredentials = {
            calls.withLock { $0 += 1 }
            starting.yield()
            for await _ in release { break }
            return TemporaryCredentials(accessKeyID: "ASIA", secretAccessKey: "s", sessionToken: "t", expiration: clock.now.withLock { $0 } + 3600)
        }
        try await withTimeout(.seconds(10), "two callers, one request") {
            try await withThrowingTaskGroup(of: String.self) { group in
                group.addTask { try await source.temporary("k", credential: "main", kind: "instance-role", obtain: obtain).accessKeyID }
                for await _ in started { break }
                group.addTask { try await source.temporary("k", credential: "main", kind: "instance-role", obtain: obtain).accessKeyID }
                releasing.yield()
                var keys: [String] = []
                for try await key in group { keys.append(key) }
                #expect(keys == ["ASIA", "ASIA"])
            }
        }
        #expect(calls.withLock { $0 } == 1, "the second caller waited for the first one's request")

        struct Refused: Error {}
        await #expect(throws: Refused.self) {
            try await source.temporary("bad", credential: "bad", kind: "assume-role") { throw Refused() }
        }
        let again = try await source.temporary("bad", credential: "bad", kind: "assume-role") {
            TemporaryCredentials(accessKeyID: "ASIA-OK", secretAccessKey: "s", sessionToken: "t", expiration: clock.now.withLock { $0 } + 3600)
        }
        #expect(again.accessKeyID == "ASIA-OK", "a failure is not cached")
        try await http.shutdown()
    }
}
