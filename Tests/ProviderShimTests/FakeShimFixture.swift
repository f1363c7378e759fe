import Controller
import Support
import ControlAPI
import Core
import Foundation
import Logging
import ProviderShim
import SwiftProtobuf
import TestSupport
import FakeProvider

/// The fake backend served in-process under the shim SDK, on a manual clock.
struct FakeShimFixture {
    let directory: TemporaryDirectory
    let server: RPCServer
    let client: ProviderClient
    let cloud: FakeCloud
    let clock: ManualFakeClock
    let shutdownRequested: TestEvent<Void>

    static let cloudSpec = ProviderV1.CloudSpec.with { $0.type = "fake"; $0.region = "local" }
    /// How long a call may wait for its answer: only a bound on a lost
    /// answer (the suite can load a 2-core machine for seconds at a time).
    static let callLimit: Duration = .seconds(30)
    static let main = ProviderV1.Credential.with {
        $0.name = "ctl-main"
        $0.authType = "access-key"
        $0.attributes = ["access-key": "AKIAFAKEEXAMPLE", "secret-key": "fake-secret-key"]
    }

    static func with(
        scenario yaml: String? = nil,
        wallClock: Bool = false,
        _ body: (FakeShimFixture) async throws -> Void
    ) async throws {
        let directory = try TemporaryDirectory()
        let scenario = try yaml.map { try FakeScenario.parse($0, file: "test.yaml") }
            ?? FakeScenario.load(path: BuiltProducts.repositoryRoot + "/scripts/scenarios/example.yaml")
        let clock = ManualFakeClock()
        let cloud = FakeCloud(scenario: scenario, clock: wallClock ? WallFakeClock() : clock)
        let logs = LogCapture()
        let shutdownRequested = TestEvent<Void>()
        var registry = RPCServiceRegistry()
        registry.register(provider: ShimProvider(backend: FakeBackend(cloud: cloud, logger: logs.logger())) {
            shutdownRequested.signal()
        })
        FakeCloudControl.register(cloud, into: &registry)
        let server = try await RPCServer.bind(unixSocketPath: directory.file("fake.sock"), registry: registry, logger: logs.logger())
        defer { directory.remove() }
        try await server.serving {
            let client = try await ProviderClient.connect(socketPath: server.socketPath, logger: logs.logger())
            let fixture = FakeShimFixture(
                directory: directory, server: server, client: client, cloud: cloud, clock: clock, shutdownRequested: shutdownRequested
            )
            do {
                try await body(fixture)
            } catch {
                await client.connection.close()
                throw error
            }
            await client.connection.close()
        }
    }

    var control: RPCClient { client.connection }
}
