import Controller
import Core
import Foundation
import SwiftProtobuf
import Testing
import TestSupport

extension EC2Tests {
    /// `provider-shim ec2` with each credential type beyond static keys,
    /// against moto with IAM auth enforced: keys with a session token from
    /// STS, STS AssumeRole (refused roles too), and the instance role from
    /// the fixture's IMDSv2 service. Nested in the serialized EC2 suite: one
    /// moto, one test at a time, so the fixture's request lines are this
    /// test's alone. The shims log at trace level, and no secret may show.
    @Suite("EC2 credential types against moto")
    struct CredentialTypes {
        static func credential(_ type: String, _ attributes: [String: String], name: String = "main") -> ProviderV1.Credential {
            .with { $0.name = name; $0.authType = type; $0.attributes = attributes }
        }

        static func assumeRole(_ truth: MotoServer.Truth, role: String? = nil, externalID: String? = nil, duration: Int? = nil)
            -> ProviderV1.Credential
        {
            var attributes = [
                "access-key": truth.assumer.access_key, "secret-key": truth.assumer.secret_key, "role-arn": role ?? truth.role_arn,
                "external-id": externalID ?? truth.external_id,
            ]
            if let duration { attributes["duration-seconds"] = "\(duration)" }
            return credential("assume-role", attributes)
        }

        static func cloud(_ moto: MotoServer) -> ProviderV1.CloudSpec {
            var cloud = EC2Tests.cloud(moto)
            cloud.attributes["sts-endpoint"] = moto.endpoint
            return cloud
        }

        /// The shim's answers for every instance of the fixture match moto's.
        static func expectTheTruth(_ client: ProviderClient, _ moto: MotoServer, _ credential: ProviderV1.Credential) async throws {
            let ids = moto.truth.instances.keys.sorted()
            let instances = try await client.instances(cloud: cloud(moto), credential: credential, ids: ids, timeout: .seconds(60))
            #expect(instances.map(\.instanceID) == ids)
            #expect(instances.allSatisfy { $0.found && $0.status.rawStatus == moto.truth.instances[$0.instanceID]?.state })
            let interfaces = try await client.networkInterfaces(cloud: cloud(moto), credential: credential, ids: ids, timeout: .seconds(60))
            for result in interfaces {
                #expect(EC2Tests.simplified(result.interfaces) == moto.truth.instances[result.instanceID]?.interfaces)
            }
        }

        static func secrets(_ truth: MotoServer.Truth) -> [String] {
            [truth.session.secret_key, truth.session.session_token, truth.assumer.secret_key, truth.poller.secret_key]
        }

        @Test func keysWithASessionTokenAreUsedAsGiven() async throws {
            let moto = try await EC2Tests.moto.value
            let truth = moto.truth
            let session = Self.credential("session-token", [
                "access-key": truth.session.access_key, "secret-key": truth.session.secret_key, "session-token": truth.session.session_token,
            ])
            try await EC2Tests.withShim(arguments: ["--log-level", "trace"], secrets: Self.secrets(truth)) { client in
                let verdict = try await client.validateCredential(cloud: Self.cloud(moto), credential: session, timeout: .seconds(30))
                #expect(verdict.valid, "\(verdict.reason)")
                try await Self.expectTheTruth(client, moto, session)

                var wrong = session
                wrong.attributes["session-token"] = EC2Tests.secretMarker
                let refused = await rpcError {
                    _ = try await client.instances(cloud: Self.cloud(moto), credential: wrong, ids: [truth.instances.keys.sorted()[0]], timeout: .seconds(30))
                }
                #expect(refused?.code == .unauthenticated, "\(String(describing: refused))")

                var missing = session
                missing.attributes["session-token"] = nil
                let incomplete = try await client.validateCredential(cloud: Self.cloud(moto), credential: missing, timeout: .seconds(30))
                #expect(!incomplete.valid)
                #expect(incomplete.reason == "credential main (session-token) needs attribute session-token")
            }
        }

        /// AssumeRole once; the keys kept while far from expiry and obtained
        /// anew once within the margin. `--credential-refresh-margin 1200`:
        /// 3600-second keys are far from it, 900-second keys always within.
        @Test func assumeRoleKeysAreKeptUntilTheMarginThenObtainedAnew() async throws {
            let moto = try await EC2Tests.moto.value
            let truth = moto.truth
            let ids = [truth.instances.keys.sorted()[0]]
            let log = try await EC2Tests.withShim(
                arguments: ["--log-level", "trace", "--credential-refresh-margin", "1200"], secrets: Self.secrets(truth)
            ) { client in
                let hour = Self.assumeRole(truth, duration: 3600)
                var start = try await moto.mark()
                let verdict = try await client.validateCredential(cloud: Self.cloud(moto), credential: hour, timeout: .seconds(30))
                #expect(verdict.valid, "\(verdict.reason)")
                try await Self.expectTheTruth(client, moto, hour)
                _ = try await client.instances(cloud: Self.cloud(moto), credential: hour, ids: ids, timeout: .seconds(30))
                var end = try await moto.mark()
                #expect(moto.count("fixture: AssumeRole 200", from: start, to: end) == 1, "one AssumeRole for five calls")

                let quarter = Self.assumeRole(truth, duration: 900)
                start = try await moto.mark()
                for _ in 0..<3 {
                    _ = try await client.instances(cloud: Self.cloud(moto), credential: quarter, ids: ids, timeout: .seconds(30))
                }
                end = try await moto.mark()
                #expect(moto.count("fixture: AssumeRole 200", from: start, to: end) == 3, "keys within the margin are obtained anew")
            }
            #expect(log.contains("obtained temporary keys"))
        }

        @Test func aRoleThatIsRefusedIsPermissionDeniedAndInvalid() async throws {
            let moto = try await EC2Tests.moto.value
            let truth = moto.truth
            let ids = [truth.instances.keys.sorted()[0]]
            try await EC2Tests.withShim(arguments: ["--log-level", "trace"], secrets: Self.secrets(truth)) { client in
                for refused in [Self.assumeRole(truth, role: truth.locked_role_arn), Self.assumeRole(truth, externalID: "not-the-external-id")] {
                    let verdict = try await client.validateCredential(cloud: Self.cloud(moto), credential: refused, timeout: .seconds(30))
                    #expect(!verdict.valid)
                    #expect(verdict.reason.hasPrefix("AssumeRole: AccessDenied: "), "\(verdict.reason)")
                    let denied = await rpcError {
                        _ = try await client.instances(cloud: Self.cloud(moto), credential: refused, ids: ids, timeout: .seconds(30))
                    }
                    #expect(denied?.code == .permissionDenied, "\(String(describing: denied))")
                    #expect(denied?.message.hasPrefix("AssumeRole: AccessDenied: User: arn:aws:iam::123456789012:user/assumer") == true)
                }

                var wrongSecret = Self.assumeRole(truth)
                wrongSecret.attributes["secret-key"] = EC2Tests.secretMarker
                let unauthenticated = await rpcError {
                    _ = try await client.instances(cloud: Self.cloud(moto), credential: wrongSecret, ids: ids, timeout: .seconds(30))
                }
                #expect(unauthenticated?.code == .unauthenticated, "\(String(describing: unauthenticated))")
                #expect(unauthenticated?.message.hasPrefix("AssumeRole: SignatureDoesNotMatch") == true)

                let unknown = try await client.validateCredential(
                    cloud: Self.cloud(moto), credential: Self.credential("web-identity", ["token": "x"]), timeout: .seconds(30)
                )
                #expect(!unknown.valid)
                #expect(unknown.reason == "credential main has auth type \"web-identity\"; the ec2 backend knows access-key, session-token, assume-role, instance-role")
            }
        }

        /// The instance role from the fixture's metadata service, which
        /// refuses a GET without an IMDSv2 token: one token for the whole
        /// run, the keys kept while far from expiry (6 hours) and obtained
        /// anew once within the margin (200-second keys, margin 300 s).
        @Test func instanceRoleKeysComeFromIMDSv2() async throws {
            let moto = try await EC2Tests.moto.value
            let truth = moto.truth
            let ids = [truth.instances.keys.sorted()[0]]
            #expect(try await moto.control(["imds-probe"]) == "401", "a metadata GET without a token is refused")
            try await moto.setInstanceRoleLifetime(seconds: 6 * 3600)
            let environment = ["AWS_EC2_METADATA_SERVICE_ENDPOINT": moto.endpoint]
            let log = try await EC2Tests.withShim(arguments: ["--log-level", "trace"], environment: environment, secrets: Self.secrets(truth)) { client in
                let role = Self.credential("instance-role", [:])
                var start = try await moto.mark()
                let verdict = try await client.validateCredential(cloud: Self.cloud(moto), credential: role, timeout: .seconds(30))
                #expect(verdict.valid, "\(verdict.reason)")
                try await Self.expectTheTruth(client, moto, role)
                var end = try await moto.mark()
                #expect(moto.count("fixture: imds PUT /latest/api/token 200", from: start, to: end) == 1)
                #expect(moto.count("fixture: imds GET /latest/meta-data/iam/security-credentials/ 200", from: start, to: end) == 1)
                #expect(moto.count("fixture: imds GET /latest/meta-data/iam/security-credentials/\(truth.instance_role) 200", from: start, to: end) == 1,
                        "the keys kept for five calls")
                #expect(moto.count(" 401 ", from: start, to: end) == 0, "every metadata request carried the token")

                try await moto.setInstanceRoleLifetime(seconds: 200)
                let named = Self.credential("instance-role", ["role": truth.instance_role], name: "named")
                start = try await moto.mark()
                for _ in 0..<3 {
                    _ = try await client.instances(cloud: Self.cloud(moto), credential: named, ids: ids, timeout: .seconds(30))
                }
                end = try await moto.mark()
                #expect(moto.count("fixture: imds GET /latest/meta-data/iam/security-credentials/\(truth.instance_role) 200", from: start, to: end) == 3,
                        "keys within the margin are obtained anew")
                #expect(moto.count("fixture: imds GET /latest/meta-data/iam/security-credentials/ 200", from: start, to: end) == 0, "the role was named")
                #expect(moto.count("fixture: imds PUT", from: start, to: end) == 0, "the token is reused")

                let missing = Self.credential("instance-role", ["role": "no-such-role"], name: "missing")
                let refused = await rpcError {
                    _ = try await client.instances(cloud: Self.cloud(moto), credential: missing, ids: ids, timeout: .seconds(30))
                }
                #expect(refused?.code == .unauthenticated)
                #expect(refused?.message == "instance-role: the instance has no role of the name the credential's attribute role gives")
            }
            try await moto.setInstanceRoleLifetime(seconds: 6 * 3600)
            #expect(log.contains("obtained temporary keys") && log.contains("auth_type=instance-role"))
            #expect(!log.contains("SecretAccessKey") && !log.contains("X-aws-ec2-metadata-token:"), "no key material nor token in the log")
        }
    }
}
