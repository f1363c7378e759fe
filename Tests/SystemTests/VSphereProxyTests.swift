import Controller
import Core
import Foundation
import Testing
import TestSupport

extension VSphereTests {
    /// `provider-shim vsphere` through a real proxy, tinyproxy on loopback
    /// (Tinyproxy.swift), as `ec2` is in EC2ProxyTests: the simulator's
    /// endpoint is plain HTTP, so HTTP_PROXY routes it, with a CONNECT that
    /// tinyproxy logs. Nested in the serialized vSphere suite.
    @Suite("vSphere through a proxy")
    struct Proxy {
        @Test func vCenterIsReachedThroughTheProxyTheEnvironmentNames() async throws {
            let sim = try await VSphereTests.vcsim.value
            let truth = sim.truth
            let target = try #require(URL(string: truth.url)).port.map { "127.0.0.1:\($0)" }
            let cloud = VSphereTests.cloud(sim)
            let good = VSphereTests.credential(user: truth.user, password: truth.password)
            let names = truth.uniqueNames
            try await Tinyproxy.with { proxy in
                let start = proxy.lines.count
                let log = try await VSphereTests.withShim(sim, environment: ["HTTP_PROXY": proxy.url]) { client in
                    #expect(try await client.validateCredential(cloud: cloud, credential: good, timeout: .seconds(30)).valid)
                    let instances = try await client.instances(cloud: cloud, credential: good, ids: names, timeout: .seconds(30))
                    #expect(instances.allSatisfy { $0.found }, "every VM found through the proxy")
                }
                try await proxy.waitForConnect(to: try #require(target), from: start)
                #expect(log.contains("http=\"http://127.0.0.1:\(proxy.port) (HTTP_PROXY)\""), "the route is logged at start: \(log)")

                // NO_PROXY lists the simulator's address: the same calls go direct.
                let direct = proxy.lines.count
                let bypassed = try await VSphereTests.withShim(sim, environment: ["HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"]) { client in
                    let instances = try await client.instances(cloud: cloud, credential: good, ids: names, timeout: .seconds(30))
                    #expect(instances.allSatisfy { $0.found })
                }
                #expect(bypassed.contains("no_proxy=\"127.0.0.1 (NO_PROXY)\""))
                let end = try await Self.barrier(proxy, to: truth.url)
                #expect(proxy.connects(to: try #require(target), from: direct, to: end).isEmpty, "NO_PROXY=127.0.0.1: nothing through the proxy")
            }
        }

        /// Sends a plain GET to `url` through the proxy and waits until the
        /// proxy has logged it: every line it logged before is then in
        /// `lines`. Returns its index.
        static func barrier(_ proxy: Tinyproxy, to url: String) async throws -> Int {
            let start = proxy.lines.count
            let get = try await ChildProcess.spawn(
                "/usr/bin/env", ["python3", "-c", "import sys, urllib.request as u\ntry: u.urlopen(sys.argv[1], timeout=10).read()\nexcept Exception: pass", url + "?barrier"],
                environment: ["http_proxy": proxy.url, "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
            )
            get.closeStdin()
            _ = try await get.waitForExit(.seconds(20))
            return try await proxy.process.stderrLines.waitForLine(containing: "?barrier", from: start).index
        }

        @Test func aMalformedProxyStopsTheShimInOneLine() async throws {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            chmod(directory.path, 0o700)
            let shim = try await ChildProcess.spawn(
                BuiltProducts.path(of: "provider-shim"), ["vsphere"],
                environment: ["INSTANCEPOLLER_SOCKET": directory.file("v.sock"), "HTTPS_PROXY": "ftp://user:hunter2@proxy:21"]
            )
            #expect(try await shim.waitForExit() == 2)
            let stderr = try await shim.output().stderr
            #expect(stderr.hasPrefix("provider-shim vsphere: HTTPS_PROXY: "), "\(stderr)")
            #expect(stderr.split(separator: "\n").count == 1 && !stderr.contains("hunter2"), "\(stderr)")
        }
    }
}
