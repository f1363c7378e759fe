import Controller
import Support
import ControlAPI
import Core
import Foundation
import ProviderShim
import SwiftProtobuf
import Testing
import TestSupport
import FakeProvider

/// containerd's Go ttrpc client calling all six provider methods of the real
/// `provider-shim fake` binary.
@Suite("Go ttrpc client against provider-shim fake", .serialized)
struct GoProviderClientTests {
    struct Report: Decodable {
        struct Handshake: Decodable {
            var protocol_version: UInt32
            var shim_name: String
            var cloud_types: [String]
        }
        struct Health: Decodable { var status: String }
        struct Validate: Decodable {
            var valid: Bool
            var reason: String
        }
        struct Status: Decodable {
            var state: String
            var raw_status: String
        }
        struct Instance: Decodable {
            var instance_id: String
            var found: Bool
            var status: Status?
        }
        struct Address: Decodable {
            var value: String
            var type: String
            var scope: String
        }
        struct Interface: Decodable {
            var device_index: Int32
            var mac_address: String
            var provider_id: String
            var addresses: [Address]?
            var shadow_addresses: [Address]?
            var primary: Bool
        }
        struct Interfaces: Decodable {
            var instance_id: String
            var found: Bool
            var interfaces: [Interface]?
        }
        struct Failure: Decodable {
            var method: String
            var code: Int32
            var message: String
        }
        var handshake: Handshake?
        var health: Health?
        var validate: Validate?
        var instances: [Instance]?
        var interfaces: [Interfaces]?
        var shutdown: Bool
        var errors: [Failure]?
    }

    static func startFake(_ directory: TemporaryDirectory) async throws -> (ChildProcess, String) {
        let socketPath = directory.file("fake.sock")
        let shim = try await ChildProcess.spawn(
            BuiltProducts.path(of: "provider-shim"),
            ["fake", "--scenario", BuiltProducts.repositoryRoot + "/scripts/scenarios/example.yaml", "--manual-clock"],
            environment: ["INSTANCEPOLLER_SOCKET": socketPath]
        )
        #expect(try await shim.nextLine() == "instancepoller-shim|1|unix|\(socketPath)|ttrpc")
        return (shim, socketPath)
    }

    static func runGoClient(_ arguments: [String]) async throws -> Report {
        let client = try await ChildProcess.spawn(try await GoFixtures.binary("ttrpc-provider-client"), arguments)
        let status = try await client.waitForExit(.seconds(60))
        let output = try await client.output()
        #expect(status == 0, "Go client stderr: \(output.stderr)")
        return try JSONDecoder().decode(Report.self, from: Data(output.stdout.utf8))
    }

    @Test func allSixMethods() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let (shim, socketPath) = try await Self.startFake(directory)
        // Move the fake's clock to when i-web-1 runs with its interfaces.
        let control = try await RPCClient.connect(unixSocketPath: socketPath, logger: LogCapture().logger())
        _ = try await control.call(FakeCloudControl.advanceClock, .with { $0.byNano = Duration.seconds(8).totalNanoseconds })
        await control.close()

        let report = try await Self.runGoClient([
            "-socket", socketPath,
            "-credential", "access-key=AKIAFAKEEXAMPLE,secret-key=fake-secret-key",
            "-ids", "i-web-1,i-db-1,nope",
            "-shutdown",
        ])
        #expect(report.errors ?? [] == [] as [Report.Failure], "\(report.errors ?? [])")
        #expect(report.handshake?.shim_name == "fake" && report.handshake?.protocol_version == 1)
        #expect(report.handshake?.cloud_types == ["fake"])
        #expect(report.health?.status == "SERVING_STATUS_SERVING")
        #expect(report.validate?.valid == true)
        #expect(report.instances?.map(\.instance_id) == ["i-web-1", "i-db-1", "nope"])
        #expect(report.instances?.map(\.found) == [true, true, false])
        #expect(report.instances?[0].status?.state == "INSTANCE_STATE_RUNNING")
        #expect(report.instances?[0].status?.raw_status == "running")
        let web = try #require(report.interfaces?.first?.interfaces)
        #expect(web.map(\.provider_id) == ["eni-web1", "eni-web1b"])
        #expect(web[0].primary && web[0].mac_address == "02:00:00:00:01:01")
        #expect(web[0].addresses?.map(\.value) == ["10.0.1.10", "2001:db8::10"])
        #expect(web[0].addresses?[1].type == "ADDRESS_TYPE_IPV6")
        #expect(web[0].shadow_addresses?.first?.value == "203.0.113.10")
        #expect(web[0].shadow_addresses?.first?.scope == "ADDRESS_SCOPE_PUBLIC")
        #expect(report.interfaces?.map(\.found) == [true, true, false])
        #expect(report.shutdown)
        // Shutdown from Go ends the shim cleanly.
        #expect(try await shim.waitForExit(.seconds(15)) == 0)
        #expect(!FileManager.default.fileExists(atPath: socketPath))
    }

    @Test func aWrongSecretIsUnauthenticatedForGoToo() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let (shim, socketPath) = try await Self.startFake(directory)
        let report = try await Self.runGoClient([
            "-socket", socketPath,
            "-credential", "access-key=AKIAFAKEEXAMPLE,secret-key=wrong-guess",
            "-ids", "i-db-1",
        ])
        #expect(report.validate?.valid == false)
        let failures = report.errors ?? []
        #expect(failures.map(\.method) == ["Instances", "NetworkInterfaces"])
        #expect(failures.allSatisfy { $0.code == 16 && !$0.message.contains("wrong-guess") })
        shim.closeStdin()
        #expect(try await shim.waitForExit(.seconds(5)) == 0)
    }
}

extension GoProviderClientTests.Report.Failure: Equatable {}
