import Controller
import Support
import ControlAPI
import Core
import Foundation
import Logging
import SwiftProtobuf
import Testing
import TestSupport

/// `provider-shim ec2` against moto's EC2 server with auth enforced: first
/// the shim alone through the provider contract, then the real controller
/// polling it. One moto serves the suite, so the tests run one at a time
/// (the request counts must be the controller's alone).
@Suite("EC2 backend against moto", .serialized)
struct EC2Tests {
    static let moto = Task<MotoServer, any Error> { try await MotoServer.start() }

    static func cloud(_ moto: MotoServer, pageSize: Int = 5) -> ProviderV1.CloudSpec {
        .with {
            $0.type = "ec2"
            $0.name = "moto"
            $0.region = moto.truth.region
            $0.endpoint = moto.endpoint
            $0.attributes = ["page-size": "\(pageSize)"]
        }
    }

    static func credential(_ keys: MotoServer.Keys, secret: String? = nil) -> ProviderV1.Credential {
        .with {
            $0.name = "main"
            $0.authType = "access-key"
            $0.attributes = ["access-key": keys.access_key, "secret-key": secret ?? keys.secret_key]
        }
    }

    /// `provider-shim ec2` as a process under the shim contract, and a client.
    ///
    /// - Parameters:
    ///   - arguments: after `ec2 --credential-ttl 300`.
    ///   - environment: besides INSTANCEPOLLER_SOCKET (the shim's whole
    ///     environment, as the controller builds it from `env:`).
    ///   - secrets: must not appear in the shim's log (nor must
    ///     ``secretMarker``).
    /// - Returns: the shim's log (stderr).
    @discardableResult
    static func withShim(
        arguments: [String] = [], environment: [String: String] = [:], secrets: [String] = [],
        _ body: (ProviderClient) async throws -> Void
    ) async throws -> String {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        chmod(directory.path, 0o700)
        let socket = directory.file("ec2.sock")
        let shim = try await ChildProcess.spawn(
            BuiltProducts.path(of: "provider-shim"), ["ec2", "--credential-ttl", "300"] + arguments,
            environment: environment.merging(["INSTANCEPOLLER_SOCKET": socket]) { $1 }
        )
        let line = try await shim.nextLine()
        #expect(line == "instancepoller-shim|1|unix|\(socket)|ttrpc", "the handshake line")
        let client = try await ProviderClient.connect(socketPath: socket, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        let hello = try await client.handshake(controllerVersion: "test", timeout: .seconds(10))
        #expect(hello.shimName == "ec2")
        #expect(hello.cloudTypes == ["ec2"])
        do {
            try await body(client)
        } catch {
            shim.kill()
            throw error
        }
        await client.connection.close()
        shim.closeStdin()
        #expect(try await shim.waitForExit() == 0)
        let log = try await shim.output().stderr
        #expect(!log.contains(Self.secretMarker), "a secret reached the shim's log")
        for secret in secrets where !secret.isEmpty {
            #expect(!log.contains(secret), "a secret (\(secret.prefix(4))…) reached the shim's log")
        }
        return log
    }

    static let secretMarker = "WRONG-secret-value"

    @Test func theShimReportsWhatEC2Says() async throws {
        let moto = try await Self.moto.value
        let truth = moto.truth
        let cloud = Self.cloud(moto)
        let good = Self.credential(truth.poller)
        try await Self.withShim { client in
            let verdict = try await client.validateCredential(cloud: cloud, credential: good, timeout: .seconds(30))
            #expect(verdict.valid)
            #expect(!verdict.cached)
            #expect(try await client.validateCredential(cloud: cloud, credential: good, timeout: .seconds(30)).cached, "answered from the cache")

            let unknown = "i-0123456789abcdef0"
            let ids = truth.instances.keys.sorted() + [unknown]
            let before = moto.requests
            let instances = try await client.instances(cloud: cloud, credential: good, ids: ids, timeout: .seconds(60))
            try await moto.waitForRequests(before + (truth.instances.count + 4) / 5)
            #expect(moto.requests - before >= (truth.instances.count + 4) / 5, "every page followed (page size 5)")
            #expect(instances.map(\.instanceID) == ids, "index-aligned")
            for result in instances {
                guard let expected = truth.instances[result.instanceID] else {
                    #expect(!result.found, "an unknown id is simply not found")
                    continue
                }
                #expect(result.found, "\(expected.label)")
                #expect(result.status.rawStatus == expected.state, "\(expected.label)")
            }
            let byLabel = Dictionary(uniqueKeysWithValues: zip(instances, ids).compactMap { result, id in truth.instances[id].map { ($0.label, result) } })
            #expect(byLabel["multi"]?.status.state == .running)
            #expect(byLabel["stopped"]?.status.state == .stopped)
            #expect(byLabel["terminated"]?.status.state == .terminated)

            let found = instances.filter(\.found).map(\.instanceID)
            let interfaces = try await client.networkInterfaces(cloud: cloud, credential: good, ids: found, timeout: .seconds(60))
            for result in interfaces {
                let expected = try #require(truth.instances[result.instanceID])
                #expect(Self.simplified(result.interfaces) == expected.interfaces, "\(expected.label)")
            }
            let multi = try #require(interfaces.first { truth.instances[$0.instanceID]?.label == "multi" })
            #expect(multi.interfaces.count == 2)
            #expect(multi.interfaces[0].addresses.filter { $0.type == .ipv4 }.count == 3, "primary and two secondary private IPs")
            #expect(!multi.interfaces[0].shadowAddresses.isEmpty, "the Elastic IP")
            #expect(multi.interfaces.allSatisfy { !$0.cidr.isEmpty }, "subnet CIDRs looked up")

            // DNS names: moto gives the Elastic IP a public one, and the
            // fleet's interfaces in the default VPC private ones.
            #expect(truth.instances.values.flatMap(\.interfaces).contains { !$0.private_dns.isEmpty && !$0.public_dns.isEmpty },
                    "the truth has DNS names to compare")
            #expect(multi.interfaces[0].shadowAddresses.map(\.type) == [.ipv4, .hostname], "the public DNS name next to its IP")
            #expect(multi.interfaces[0].shadowAddresses.allSatisfy { $0.scope == .public })
            let hostnames = interfaces.flatMap(\.interfaces).flatMap(\.addresses).filter { $0.type == .hostname }
            #expect(!hostnames.isEmpty && hostnames.allSatisfy { $0.scope == .cloudLocal && $0.value.hasSuffix(".ec2.internal") })
            for interface in interfaces.flatMap(\.interfaces) {
                let types = interface.addresses.map(\.type)
                #expect(types.drop { $0 != .hostname }.allSatisfy { $0 == .hostname }, "hostnames after the IPs")
                #expect(Set(interface.addresses.map(\.value)).count == interface.addresses.count, "no address twice")
            }
        }
    }

    /// The shim's interfaces in the fixture's terms.
    static func simplified(_ interfaces: [ProviderV1.NetworkInterface]) -> [MotoServer.Interface] {
        interfaces.map { interface in
            MotoServer.Interface(
                id: interface.providerID, mac: interface.macAddress, subnet: interface.providerSubnetID, vpc: interface.providerNetworkID,
                device_index: Int(interface.deviceIndex),
                private_ips: interface.addresses.filter { $0.type == .ipv4 }.map(\.value),
                ipv6: interface.addresses.filter { $0.type == .ipv6 }.map(\.value),
                public_ips: interface.shadowAddresses.filter { $0.type == .ipv4 }.map(\.value),
                private_dns: interface.addresses.filter { $0.type == .hostname }.map(\.value),
                public_dns: interface.shadowAddresses.filter { $0.type == .hostname }.map(\.value)
            )
        }
    }

    @Test func credentialProblemsAreTheContractsCodes() async throws {
        let moto = try await Self.moto.value
        let cloud = Self.cloud(moto)
        let anyID = try #require(moto.truth.instances.keys.sorted().first)
        try await Self.withShim { client in
            let wrong = Self.credential(moto.truth.poller, secret: Self.secretMarker)
            let verdict = try await client.validateCredential(cloud: cloud, credential: wrong, timeout: .seconds(30))
            #expect(!verdict.valid)
            #expect(!verdict.reason.isEmpty && !verdict.reason.contains(Self.secretMarker))
            let unauthenticated = await rpcError { _ = try await client.instances(cloud: cloud, credential: wrong, ids: [anyID], timeout: .seconds(30)) }
            #expect(unauthenticated?.code == .unauthenticated)
            #expect(unauthenticated?.message.contains(Self.secretMarker) == false)

            let noPermission = Self.credential(moto.truth.noperm)
            let denied = await rpcError { _ = try await client.instances(cloud: cloud, credential: noPermission, ids: [anyID], timeout: .seconds(30)) }
            #expect(denied?.code == .permissionDenied, "\(String(describing: denied))")
            #expect(try await client.validateCredential(cloud: cloud, credential: noPermission, timeout: .seconds(30)).valid == false)

            // Nothing listens there: retried with backoff inside the deadline, then Unavailable.
            let nowhere = ProviderV1.CloudSpec.with { $0.region = "us-east-1"; $0.endpoint = "http://127.0.0.1:1" }
            let started = ContinuousClock.now
            let unreachable = await rpcError { _ = try await client.instances(cloud: nowhere, credential: noPermission, ids: [anyID], timeout: .seconds(3)) }
            #expect(unreachable?.code == .unavailable, "\(String(describing: unreachable))")
            #expect(unreachable?.message.hasPrefix("DescribeInstances: cannot reach EC2 at 127.0.0.1:1") == true)
            #expect(ContinuousClock.now - started < .seconds(3), "reported before the caller's deadline")

            let tlsOnly = ProviderV1.CloudSpec.with { $0.region = "us-east-1"; $0.endpoint = "http://ec2.example.com" }
            let refused = await rpcError { _ = try await client.instances(cloud: tlsOnly, credential: noPermission, ids: [anyID], timeout: .seconds(30)) }
            #expect(refused?.code == .invalidArgument)
        }
    }

    @Test func theControllerPollsEC2AndAWrongSecretStopsAllRequests() async throws {
        let moto = try await Self.moto.value
        let truth = moto.truth
        let h = try ControllerHarness()
        defer { h.remove() }
        let provider = """
              aws:
                shim:
                  command: \(BuiltProducts.path(of: "provider-shim"))
                  args: [ec2]
                cloud:
                  type: ec2
                  region: \(truth.region)
                  endpoint: \(moto.endpoint)
                  attributes: {page-size: "5"}
            """
        let settings = ControllerHarness.fastSettings.replacingOccurrences(of: "short_poll_cap: 400ms", with: "short_poll_cap: 200ms\n  backoff_factor: 1")
        try h.writeConfig(providers: [provider], settings: settings)
        // The harness's credential is a placeholder: set the real one as an operator would.
        let controller = try await h.start()
        let keys = h.directory.file("aws.yaml")
        FileManager.default.createFile(atPath: keys, contents: Data("access-key: \(truth.poller.access_key)\nsecret-key: \(truth.poller.secret_key)\n".utf8), attributes: [.posixPermissions: 0o600])
        #expect(try await h.cli(["credentials", "set", "aws", "main", "--auth-type", "access-key", "--file", keys]).status == 0)

        // Pending agents keep every machine in the short group: polled all the time.
        for (id, instance) in truth.instances {
            try await h.add("m-\(instance.label)", provider: "aws", instance: id, agent: .pending)
        }
        let machines = try await h.waitForMachines("the store to match EC2", .seconds(60)) { machines in
            truth.instances.allSatisfy { id, instance in
                guard let machine = machines["m-\(instance.label)"] else { return false }
                return machine.instanceStatus.rawStatus == instance.state
                    && Self.simplified(machine.interfaces) == instance.interfaces
            }
        }
        #expect(machines.count == truth.instances.count)
        #expect(machines.values.allSatisfy { $0.pollError == nil })

        // A wrong secret: invalidated at the gate, and then not one request.
        let wrongFile = h.directory.file("wrong.yaml")
        FileManager.default.createFile(atPath: wrongFile, contents: Data("access-key: \(truth.poller.access_key)\nsecret-key: \(Self.secretMarker)\n".utf8), attributes: [.posixPermissions: 0o600])
        let mark = controller.stderrLines.lines.count
        #expect(try await h.cli(["credentials", "set", "aws", "main", "--auth-type", "access-key", "--file", wrongFile]).status == 0)
        let invalidated = try await controller.stderrLines.waitForLine(containing: "credential invalidated", from: mark)
        let requestsAtInvalidation = moto.requests
        var next = invalidated.index + 1
        for _ in 0..<5 {
            next = try await controller.stderrLines.waitForLine(containing: "batch refused by the credential gate", from: next).index + 1
        }
        #expect(moto.requests == requestsAtInvalidation, "no EC2 request with the invalid credential")
        let paused = try await h.store.machines()
        #expect(paused.allSatisfy { $0.pollError?.hasPrefix("credential invalid") == true })

        // Corrected: validated, polled again.
        #expect(try await h.cli(["credentials", "set", "aws", "main", "--auth-type", "access-key", "--file", keys]).status == 0)
        try await h.waitForMachines("polling to resume", .seconds(30)) { $0.values.allSatisfy { $0.pollError == nil } }
        #expect(moto.requests > requestsAtInvalidation)
        #expect(try await h.stop(controller) == 0)
        let log = try await controller.output().stderr
        #expect(!log.contains(Self.secretMarker) && !log.contains(truth.poller.secret_key), "a secret reached the controller's log")
    }
}
