@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Foundation
import ProviderShim
import SwiftProtobuf
import Testing
import TestSupport

/// A ProviderService with a fixed set of instances, for the typed client.
struct StaticProvider: ProviderService {
    var version: UInt32 = 1
    var misalign = false

    func handshake(_ request: ProviderV1.HandshakeRequest, context: RPCServerContext) async throws -> ProviderV1.HandshakeResponse {
        guard request.protocolVersions.contains(version) || version == 99 else {
            throw RPCError(.failedPrecondition, "speaks version \(version) only")
        }
        return .with {
            $0.protocolVersion = version
            $0.shimName = "static"
            $0.shimVersion = "1.0"
            $0.cloudTypes = ["static"]
            $0.capabilities.maxBatchSize = 50
        }
    }

    func health(_ request: ProviderV1.HealthRequest, context: RPCServerContext) async throws -> ProviderV1.HealthResponse {
        .with { $0.status = .serving }
    }

    func validateCredential(_ request: ProviderV1.ValidateCredentialRequest, context: RPCServerContext) async throws -> ProviderV1.ValidateCredentialResponse {
        let good = request.credential.attributes["secret-key"] == "right"
        return .with {
            $0.valid = good
            $0.reason = good ? "" : "AuthFailure: key rejected"
        }
    }

    func instances(_ request: ProviderV1.InstancesRequest, context: RPCServerContext) async throws -> ProviderV1.InstancesResponse {
        guard request.credential.attributes["secret-key"] == "right" else {
            throw RPCError(.unauthenticated, "AuthFailure: key rejected")
        }
        var ids = request.instanceIds
        if misalign { ids.reverse() }
        return .with {
            $0.results = ids.map { id in
                .with {
                    $0.instanceID = id
                    $0.found = id.hasPrefix("i-")
                    if $0.found { $0.status = .with { $0.state = .running; $0.rawStatus = "running" } }
                }
            }
        }
    }

    func networkInterfaces(_ request: ProviderV1.NetworkInterfacesRequest, context: RPCServerContext) async throws -> ProviderV1.NetworkInterfacesResponse {
        .with {
            $0.results = request.instanceIds.map { id in
                .with {
                    $0.instanceID = id
                    $0.found = true
                    $0.interfaces = [.with {
                        $0.deviceIndex = 0
                        $0.macAddress = "02:00:00:00:00:01"
                        $0.primary = true
                        $0.addresses = [.with { $0.value = "10.0.0.5"; $0.type = .ipv4; $0.scope = .cloudLocal; $0.cidr = "10.0.0.0/24" }]
                        $0.shadowAddresses = [.with { $0.value = "203.0.113.5"; $0.type = .ipv4; $0.scope = .public }]
                    }]
                }
            }
        }
    }

    func shutdown(_ request: ProviderV1.ShutdownRequest, context: RPCServerContext) async throws -> ProviderV1.ShutdownResponse {
        ProviderV1.ShutdownResponse()
    }
}

@Suite("Provider contract over the wire")
struct ProviderClientTests {
    static func withProvider(_ provider: StaticProvider = StaticProvider(), _ body: (ProviderClient) async throws -> Void) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var registry = RPCServiceRegistry()
        registry.register(provider: provider)
        let logs = LogCapture()
        let server = try await RPCServer.bind(unixSocketPath: directory.file("shim.sock"), registry: registry, logger: logs.logger())
        try await server.serving {
            let client = try await ProviderClient.connect(socketPath: server.socketPath, logger: logs.logger())
            do {
                try await body(client)
            } catch {
                await client.connection.close()
                throw error
            }
            await client.connection.close()
        }
    }

    static let cloud = ProviderV1.CloudSpec.with { $0.type = "static"; $0.region = "local" }
    static let good = ProviderV1.Credential.with { $0.name = "main"; $0.authType = "access-key"; $0.attributes = ["secret-key": "right"] }
    static let bad = ProviderV1.Credential.with { $0.name = "main"; $0.authType = "access-key"; $0.attributes = ["secret-key": "wrong"] }

    @Test func allSixMethodsAnswer() async throws {
        try await Self.withProvider { client in
            let hello = try await client.handshake(controllerVersion: "test", timeout: .seconds(5))
            #expect(hello.shimName == "static" && hello.protocolVersion == 1 && hello.capabilities.maxBatchSize == 50)
            #expect(try await client.health(timeout: .seconds(5)).status == .serving)
            #expect(try await client.validateCredential(cloud: Self.cloud, credential: Self.good, timeout: .seconds(5)).valid)
            let invalid = try await client.validateCredential(cloud: Self.cloud, credential: Self.bad, timeout: .seconds(5))
            #expect(!invalid.valid && invalid.reason == "AuthFailure: key rejected")
            let instances = try await client.instances(cloud: Self.cloud, credential: Self.good, ids: ["i-1", "gone", "i-2"], timeout: .seconds(5))
            #expect(instances.map(\.found) == [true, false, true])
            #expect(instances[0].status.state == .running)
            let interfaces = try await client.networkInterfaces(cloud: Self.cloud, credential: Self.good, ids: ["i-1"], timeout: .seconds(5))
            #expect(interfaces[0].interfaces[0].addresses[0].value == "10.0.0.5")
            #expect(interfaces[0].interfaces[0].shadowAddresses[0].scope == .public)
            try await client.shutdown(drainTimeout: .seconds(1), timeout: .seconds(5))
        }
    }

    @Test func unauthenticatedComesBackTyped() async throws {
        try await Self.withProvider { client in
            await #expect(throws: RPCError(.unauthenticated, "AuthFailure: key rejected")) {
                _ = try await client.instances(cloud: Self.cloud, credential: Self.bad, ids: ["i-1"], timeout: .seconds(5))
            }
        }
    }

    @Test func handshakeWithAVersionNotOfferedIsRefused() async throws {
        try await Self.withProvider(StaticProvider(version: 99)) { client in
            await #expect {
                _ = try await client.handshake(controllerVersion: "test", timeout: .seconds(5))
            } throws: { error in
                (error as? RPCError)?.code == .failedPrecondition && "\(error)".contains("picked protocol version 99")
            }
        }
    }

    @Test func shimRefusingOurVersionsSaysWhy() async throws {
        try await Self.withProvider(StaticProvider(version: 2)) { client in
            await #expect(throws: RPCError(.failedPrecondition, "speaks version 2 only")) {
                _ = try await client.handshake(controllerVersion: "test", versions: [1], timeout: .seconds(5))
            }
        }
    }

    @Test func misalignmentNamesTheCountOrTheFirstResultOutOfPlace() {
        let results: [ProviderV1.InstanceResult] = ["i-2", "i-1"].map { id in .with { $0.instanceID = id } }
        #expect(ProviderV1.InstanceResult.misalignment(results, asked: ["i-1", "i-2", "i-3"]) == "the provider answered 2 results for 3 ids")
        #expect(ProviderV1.InstanceResult.misalignment(results, asked: ["i-1", "i-2"]) == "result 0 is for i-2, expected i-1")
        #expect(ProviderV1.InstanceResult.misalignment(results, asked: ["i-2", "i-1"]) == nil)
        let interfaces: [ProviderV1.InstanceInterfaces] = ["i-1", "i-3"].map { id in .with { $0.instanceID = id } }
        #expect(ProviderV1.InstanceInterfaces.misalignment(interfaces, asked: ["i-1", "i-2"]) == "result 1 is for i-3, expected i-2")
        #expect(ProviderV1.InstanceInterfaces.misalignment([], asked: []) == nil)
    }

    @Test func misalignedResultsAreRejected() async throws {
        try await Self.withProvider(StaticProvider(misalign: true)) { client in
            await #expect {
                _ = try await client.instances(cloud: Self.cloud, credential: Self.good, ids: ["i-1", "i-2"], timeout: .seconds(5))
            } throws: { error in
                (error as? RPCError)?.code == .internal && "\(error)".contains("expected i-1")
            }
        }
    }
}
