import Controller
import Core
import Foundation
import Testing
import TestSupport

extension EC2Tests {
    /// `provider-shim ec2` through a real proxy, tinyproxy on loopback
    /// (Tinyproxy.swift): moto's endpoint is plain HTTP, so HTTP_PROXY
    /// routes it, and AsyncHTTPClient reaches moto through the proxy with a
    /// CONNECT that tinyproxy logs. Nested in the serialized EC2 suite (one
    /// moto, one test at a time).
    @Suite("EC2 through a proxy")
    struct Proxy {
        static func target(_ moto: MotoServer) -> String { "127.0.0.1:\(moto.port)" }

        /// Validate, Instances and NetworkInterfaces for every instance,
        /// checked against moto's truth.
        static func pollEverything(_ client: ProviderClient, _ moto: MotoServer) async throws {
            let cloud = EC2Tests.cloud(moto)
            let credential = EC2Tests.credential(moto.truth.poller)
            #expect(try await client.validateCredential(cloud: cloud, credential: credential, timeout: .seconds(30)).valid)
            let ids = moto.truth.instances.keys.sorted()
            let instances = try await client.instances(cloud: cloud, credential: credential, ids: ids, timeout: .seconds(60))
            #expect(instances.allSatisfy { $0.found && $0.status.rawStatus == moto.truth.instances[$0.instanceID]?.state })
            let interfaces = try await client.networkInterfaces(cloud: cloud, credential: credential, ids: ids, timeout: .seconds(60))
            for result in interfaces {
                #expect(EC2Tests.simplified(result.interfaces) == moto.truth.instances[result.instanceID]?.interfaces)
            }
        }

        @Test func requestsGoThroughHTTPProxyAndNoProxySendsThemDirect() async throws {
            let moto = try await EC2Tests.moto.value
            try await Tinyproxy.with { proxy in
                let target = Self.target(moto)

                let requestsBefore = moto.requests
                let start = proxy.lines.count
                let log = try await EC2Tests.withShim(environment: ["HTTP_PROXY": proxy.url]) { client in
                    try await Self.pollEverything(client, moto)
                }
                try await proxy.waitForConnect(to: target, from: start)
                let end = try await proxy.barrier(moto)
                let connects = proxy.connects(to: target, from: start, to: end).count
                let requests = moto.requests - requestsBefore
                #expect(connects >= 1 && connects <= requests, "\(connects) tunnels through the proxy for \(requests) requests")
                #expect(proxy.lines[start..<end].filter { $0.contains("Request (file descriptor") }.count == connects, "nothing else went through it")
                #expect(log.contains("proxy routes") && log.contains("http=\"http://127.0.0.1:\(proxy.port) (HTTP_PROXY)\"") && log.contains("https=direct"),
                        "the routes are logged at start: \(log)")

                // NO_PROXY lists moto's address: the same calls go direct.
                let direct = proxy.lines.count
                let bypassed = try await EC2Tests.withShim(environment: ["HTTP_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.1"]) { client in
                    try await Self.pollEverything(client, moto)
                }
                let after = try await proxy.barrier(moto)
                #expect(proxy.connects(to: target, from: direct, to: after).isEmpty, "NO_PROXY=127.0.0.1: no request through the proxy")
                #expect(bypassed.contains("no_proxy=\"localhost,127.0.0.1 (NO_PROXY)\""))
            }
        }

        @Test func aProxyWithBasicAuthorizationIsUsedAndAWrongPasswordIsUnavailable() async throws {
            let moto = try await EC2Tests.moto.value
            let password = "proxy-Pw-\(UInt32.random(in: 1000...9999))"
            try await Tinyproxy.with(basicAuth: ("poller", password)) { proxy in
                let authorized = "http://poller:\(password)@127.0.0.1:\(proxy.port)"

                let start = proxy.lines.count
                let log = try await EC2Tests.withShim(environment: ["http_proxy": authorized], secrets: [password]) { client in
                    try await Self.pollEverything(client, moto)
                }
                try await proxy.waitForConnect(to: Self.target(moto), from: start)
                #expect(log.contains("http=\"http://127.0.0.1:\(proxy.port) (http_proxy, with basic authorization)\""))

                let wrong = "http://poller:\(EC2Tests.secretMarker)@127.0.0.1:\(proxy.port)"
                try await EC2Tests.withShim(environment: ["http_proxy": wrong]) { client in
                    let ids = [moto.truth.instances.keys.sorted()[0]]
                    let refused = await rpcError {
                        _ = try await client.instances(cloud: EC2Tests.cloud(moto), credential: EC2Tests.credential(moto.truth.poller), ids: ids, timeout: .seconds(20))
                    }
                    #expect(refused?.code == .unavailable, "\(String(describing: refused))")
                    let message = refused?.message ?? ""
                    // tinyproxy answers a wrong password's CONNECT with 401.
                    #expect(message == "DescribeInstances: cannot reach EC2 at 127.0.0.1:\(moto.port) through proxy http://127.0.0.1:\(proxy.port) (http_proxy): the proxy refused to open a tunnel (its answer to CONNECT was not 200)")
                    #expect(!message.contains(EC2Tests.secretMarker) && !message.contains("poller:"))
                }
            }
        }

        @Test func aProxyThatIsDownIsUnavailableNamingIt() async throws {
            let moto = try await EC2Tests.moto.value
            let port = try MotoServer.freePort()
            let environment = ["HTTP_PROXY": "http://poller:\(EC2Tests.secretMarker)@127.0.0.1:\(port)"]
            try await EC2Tests.withShim(environment: environment) { client in
                let cloud = EC2Tests.cloud(moto)
                let credential = EC2Tests.credential(moto.truth.poller)
                let down = await rpcError {
                    _ = try await client.instances(cloud: cloud, credential: credential, ids: ["i-1"], timeout: .seconds(5))
                }
                #expect(down?.code == .unavailable, "\(String(describing: down))")
                #expect(down?.message.hasPrefix("DescribeInstances: cannot reach EC2 at 127.0.0.1:\(moto.port) through proxy http://127.0.0.1:\(port) (HTTP_PROXY): ") == true,
                        "\(String(describing: down))")
                #expect(down?.message.contains("Connection refused") == true)
                // Unreachable is not invalid: ValidateCredential fails, it does not say no.
                let validation = await rpcError { _ = try await client.validateCredential(cloud: cloud, credential: credential, timeout: .seconds(5)) }
                #expect(validation?.code == .unavailable)
                #expect(validation?.message.contains("poller:") == false)
            }
        }

        @Test func aMalformedProxyURLStopsTheShimAtStartInOneLine() async throws {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            for (variable, value, problem) in [
                ("HTTPS_PROXY", "socks5://poller:\(EC2Tests.secretMarker)@127.0.0.1:1080", "only http:// proxies are supported, not socks5://"),
                ("http_proxy", "http://poller:\(EC2Tests.secretMarker)@127.0.0.1:99999", "the port must be from 1 to 65535"),
            ] {
                let shim = try await ChildProcess.spawn(
                    BuiltProducts.path(of: "provider-shim"), ["ec2"],
                    environment: ["INSTANCEPOLLER_SOCKET": directory.file("ec2.sock"), variable: value]
                )
                shim.closeStdin()
                #expect(try await shim.waitForExit() == 2)
                let (stdout, stderr) = try await shim.output()
                #expect(stdout.isEmpty, "no handshake line")
                #expect(stderr == "provider-shim ec2: \(variable): not a usable proxy URL: \(problem) (expected http://[user:password@]host[:port])\n")
            }
            let shim = try await ChildProcess.spawn(
                BuiltProducts.path(of: "provider-shim"), ["ec2"],
                environment: ["INSTANCEPOLLER_SOCKET": directory.file("ec2.sock"), "NO_PROXY": "10.0.0.0/40"]
            )
            shim.closeStdin()
            #expect(try await shim.waitForExit() == 2)
            #expect(try await shim.output().stderr.hasPrefix("provider-shim ec2: NO_PROXY: entry \"10.0.0.0/40\" is not a host"))
        }

        /// The real controller: the provider's `env: [HTTP_PROXY]` passes the
        /// controller's HTTP_PROXY to the shim, and the store converges on
        /// EC2's truth through the proxy.
        @Test func theControllerPollsEC2ThroughTheProxyItsConfigPasses() async throws {
            let moto = try await EC2Tests.moto.value
            let truth = moto.truth
            try await Tinyproxy.with { proxy in
                let h = try ControllerHarness()
                defer { h.remove() }
                let provider = """
                      aws:
                        shim:
                          command: \(BuiltProducts.path(of: "provider-shim"))
                          args: [ec2]
                          env: [HTTP_PROXY, NO_PROXY]
                        cloud:
                          type: ec2
                          region: \(truth.region)
                          endpoint: \(moto.endpoint)
                          attributes: {page-size: "5"}
                    """
                try h.writeConfig(providers: [provider])
                let start = proxy.lines.count
                var environment = MotoServer.withoutProxies
                environment["HTTP_PROXY"] = proxy.url
                let controller = try await h.start(environment: environment)
                let keys = h.directory.file("aws.yaml")
                _ = FileManager.default.createFile(
                    atPath: keys, contents: Data("access-key: \(truth.poller.access_key)\nsecret-key: \(truth.poller.secret_key)\n".utf8),
                    attributes: [.posixPermissions: 0o600]
                )
                #expect(try await h.cli(["credentials", "set", "aws", "main", "--auth-type", "access-key", "--file", keys]).status == 0)
                for (id, instance) in truth.instances {
                    try await h.add("m-\(instance.label)", provider: "aws", instance: id, agent: .pending)
                }
                try await h.waitForMachines("the store to match EC2 through the proxy", .seconds(60)) { machines in
                    truth.instances.allSatisfy { id, instance in
                        guard let machine = machines["m-\(instance.label)"] else { return false }
                        return machine.instanceStatus.rawStatus == instance.state && EC2Tests.simplified(machine.interfaces) == instance.interfaces
                    }
                }
                try await proxy.waitForConnect(to: Self.target(moto), from: start)
                let end = try await proxy.barrier(moto)
                #expect(!proxy.connects(to: Self.target(moto), from: start, to: end).isEmpty)
                #expect(try await h.stop(controller) == 0)
                let log = try await controller.output().stderr
                #expect(!log.contains(truth.poller.secret_key))
            }
        }
    }
}
