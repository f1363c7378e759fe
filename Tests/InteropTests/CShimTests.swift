import Controller
import Support
import ControlAPI
import Core
import Foundation
import Logging
import NIOCore
import SwiftProtobuf
import Testing
import TestSupport

/// The C shim's fake cloud, the process contract of PROTOCOL.md §5, and the
/// framing rules of §2–3, checked through the controller's `ProviderClient`
/// and through raw frames.
@Suite("C shim (protobuf-c) against the controller's client")
struct CShimTests {
    static let cloud = ProviderV1.CloudSpec.with {
        $0.type = "c-static"
        $0.name = "c-test"
    }

    static func credential(token: String) -> ProviderV1.Credential {
        .with {
            $0.name = "c-cred"
            $0.authType = "token"
            $0.attributes = ["token": token]
        }
    }

    static let good = credential(token: "letmein")

    /// A started shim: its handshake line was read and checked.
    struct Shim {
        let child: ChildProcess
        let socketPath: String
        let handshakeLine: String
    }

    struct StartFailed: Error, CustomStringConvertible {
        var line: String?
        var expected: String
        var stderr: String
        var description: String {
            "handshake line \(line.map { "\"\($0)\"" } ?? "missing"), want \"\(expected)\"; stderr: \(stderr)"
        }
    }

    /// Starts the shim with `INSTANCEPOLLER_SOCKET=<private dir>/shim.sock`
    /// (after `prepare` ran on that path), runs `body`, then closes stdin and
    /// reaps it (killing it if it does not go).
    static func withShim<T>(
        prepare: (String) throws -> Void = { _ in },
        _ body: (Shim) async throws -> T
    ) async throws -> T {
        let binary = try await CShimFixture.binary()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("shim.sock")
        try prepare(path)
        let child = try await ChildProcess.spawn(binary, [], environment: ["INSTANCEPOLLER_SOCKET": path])
        do {
            let line = try await child.nextLine()
            let expected = "instancepoller-shim|1|unix|\(path)|ttrpc"
            guard line == expected else {
                throw StartFailed(line: line, expected: expected, stderr: child.stderr)
            }
            let result = try await body(Shim(child: child, socketPath: path, handshakeLine: line!))
            child.closeStdin()
            if (try? await child.waitForExit(.seconds(5))) == nil {
                child.kill()
                _ = try? await child.waitForExit(.seconds(5))
            }
            return result
        } catch {
            child.kill()
            _ = try? await child.waitForExit(.seconds(5))
            throw error
        }
    }

    static func connect(_ shim: Shim) async throws -> ProviderClient {
        try await ProviderClient.connect(socketPath: shim.socketPath, logger: LogCapture().logger())
    }



    /// Runs the shim to its exit with stdout and stderr sent to files (via
    /// `/bin/sh`), so both are complete once it has exited: a pipe's EOF can
    /// lag behind the exit status.
    static func runToExit(environment: [String: String]) async throws -> (stdout: String, stderr: String, status: Int32) {
        let binary = try await CShimFixture.binary()
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let out = directory.file("stdout"), err = directory.file("stderr")
        let child = try await ChildProcess.spawn(
            "/bin/sh", ["-c", "exec \"$0\" >\"$1\" 2>\"$2\"", binary, out, err], environment: environment)
        child.closeStdin()
        let status = try await child.waitForExit(.seconds(10))
        let read = { (path: String) in String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self) }
        return (read(out), read(err), status)
    }

    // ------------------------------------------------------------ handshake line

    @Test func printsTheHandshakeLineOnceAndListensOn0600() async throws {
        try await Self.withShim { shim in
            #expect(try SocketFiles.mode(shim.socketPath) == 0o600)
            // Nothing else ever on stdout: not while serving, not when exiting.
            let client = try await Self.connect(shim)
            _ = try await client.health(timeout: .seconds(10))
            await client.connection.close()
            shim.child.closeStdin()
            #expect(try await shim.child.waitForExit(.seconds(5)) == 0)
            #expect(try await shim.child.nextLine(.seconds(5)) == nil)
            #expect(shim.child.stdout == shim.handshakeLine + "\n")
        }
    }

    // ------------------------------------------------------------ the six methods

    @Test func handshakeHealthAndCredentials() async throws {
        try await Self.withShim { shim in
            let client = try await Self.connect(shim)
            #expect(client.connection.peer.pid == shim.child.pid)

            let hello = try await client.handshake(controllerVersion: "c-shim-tests", versions: [1], timeout: .seconds(10))
            #expect(hello.protocolVersion == 1)
            #expect(hello.shimName == "c-shim")
            #expect(hello.shimVersion == "1.0.0")
            #expect(hello.cloudTypes == ["c-static"])
            #expect(hello.hasCapabilities)
            #expect(hello.capabilities.maxBatchSize == 100)
            #expect(!hello.capabilities.credentialCache)
            // Offering more versions than it speaks is fine: it picks 1.
            #expect(try await client.handshake(controllerVersion: "x", versions: [3, 1, 2], timeout: .seconds(10)).protocolVersion == 1)

            let health = try await client.health(timeout: .seconds(10))
            #expect(health.status == .serving)
            #expect(health.message == "")

            let valid = try await client.validateCredential(cloud: Self.cloud, credential: Self.good, timeout: .seconds(10))
            #expect(valid.valid && valid.reason == "" && !valid.cached)
            let invalid = try await client.validateCredential(
                cloud: Self.cloud, credential: Self.credential(token: "nope"), timeout: .seconds(10))
            #expect(!invalid.valid && invalid.reason == "token rejected" && !invalid.cached)
            let none = try await client.validateCredential(
                cloud: Self.cloud, credential: ProviderV1.Credential(), timeout: .seconds(10))
            #expect(!none.valid && none.reason == "token rejected")
            // Another attribute named like the secret's value is no token.
            let wrongKey = try await client.validateCredential(
                cloud: Self.cloud, credential: .with { $0.attributes = ["password": "letmein"] }, timeout: .seconds(10))
            #expect(!wrongKey.valid)
            await client.connection.close()
        }
    }

    @Test func instancesAreTheStaticCloudIndexAligned() async throws {
        try await Self.withShim { shim in
            let client = try await Self.connect(shim)
            let ids = ["c-2", "i-unknown", "c-1", "c-3", "c-1", ""]
            let results = try await client.instances(cloud: Self.cloud, credential: Self.good, ids: ids, timeout: .seconds(10))
            #expect(results.map(\.instanceID) == ids)
            #expect(results.map(\.found) == [true, false, true, true, true, false])

            #expect(results[0].status.state == .stopped)
            #expect(results[0].status.rawStatus == "stopped")
            #expect(results[0].status.message == "stopped by operator")
            #expect(!results[1].hasStatus)
            #expect(results[2].status.state == .running)
            #expect(results[2].status.rawStatus == "running")
            #expect(results[2].status.message == "")
            #expect(results[3].status.state == .provisioning)
            #expect(results[3].status.rawStatus == "building")
            #expect(results[3].status.message == "")
            #expect(results[4] == results[2])
            #expect(!results[5].hasStatus)

            #expect(try await client.instances(cloud: Self.cloud, credential: Self.good, ids: [], timeout: .seconds(10)).isEmpty)
            await client.connection.close()
        }
    }

    @Test func networkInterfacesAreTheStaticCloudIndexAligned() async throws {
        try await Self.withShim { shim in
            let client = try await Self.connect(shim)
            let ids = ["c-3", "c-1", "missing", "c-2"]
            let results = try await client.networkInterfaces(cloud: Self.cloud, credential: Self.good, ids: ids, timeout: .seconds(10))
            #expect(results.map(\.instanceID) == ids)
            #expect(results.map(\.found) == [true, true, false, true])

            // c-3: found, no interfaces yet; "missing": not found, nothing.
            #expect(results[0].interfaces.isEmpty)
            #expect(results[2].interfaces.isEmpty)

            // c-1: eth0 (primary, with a public shadow address) and eth1 (IPv6).
            let c1 = results[1].interfaces
            try #require(c1.count == 2)
            let eth0 = ProviderV1.NetworkInterface.with {
                $0.deviceIndex = 0
                $0.macAddress = "02:c0:00:00:00:01"
                $0.providerID = "eni-c1a"
                $0.providerSubnetID = "subnet-c"
                $0.providerNetworkID = "vpc-c"
                $0.interfaceName = "eth0"
                $0.cidr = "10.9.0.0/24"
                $0.primary = true
                $0.addresses = [.with { $0.value = "10.9.0.11"; $0.type = .ipv4; $0.scope = .cloudLocal; $0.cidr = "10.9.0.0/24" }]
                $0.shadowAddresses = [.with { $0.value = "198.51.100.11"; $0.type = .ipv4; $0.scope = .public }]
            }
            #expect(c1[0] == eth0)
            #expect(c1[1].deviceIndex == 1)
            #expect(c1[1].macAddress == "02:c0:00:00:00:02")
            #expect(c1[1].providerID == "eni-c1b")
            #expect(c1[1].interfaceName == "eth1")
            #expect(c1[1].cidr == "fd00:9::/64")
            #expect(!c1[1].primary && !c1[1].disabled)
            #expect(c1[1].addresses.map(\.value) == ["fd00:9::11"])
            #expect(c1[1].addresses.map(\.type) == [.ipv6])
            #expect(c1[1].addresses.map(\.scope) == [.cloudLocal])
            #expect(c1[1].shadowAddresses.isEmpty)

            // c-2: one interface, no shadow address.
            let c2 = results[3].interfaces
            try #require(c2.count == 1)
            #expect(c2[0].deviceIndex == 0)
            #expect(c2[0].primary)
            #expect(c2[0].addresses.map(\.value) == ["10.9.0.12"])
            #expect(c2[0].addresses.map(\.type) == [.ipv4])
            #expect(c2[0].addresses.map(\.scope) == [.cloudLocal])
            #expect(c2[0].shadowAddresses.isEmpty)
            await client.connection.close()
        }
    }

    @Test func aBadTokenIsUnauthenticatedAndNotEchoed() async throws {
        try await Self.withShim { shim in
            let client = try await Self.connect(shim)
            let secret = "hunter2-not-the-token"
            let bad = Self.credential(token: secret)
            let instances = await rpcError {
                _ = try await client.instances(cloud: Self.cloud, credential: bad, ids: ["c-1"], timeout: .seconds(10))
            }
            #expect(instances?.code == .unauthenticated)
            #expect(instances?.message == "token rejected")
            #expect(instances.map { !"\($0)".contains(secret) } == true)

            let interfaces = await rpcError {
                _ = try await client.networkInterfaces(cloud: Self.cloud, credential: bad, ids: ["c-1"], timeout: .seconds(10))
            }
            #expect(interfaces?.code == .unauthenticated)
            #expect(interfaces?.message == "token rejected")
            #expect(interfaces.map { !"\($0)".contains(secret) } == true)

            // The connection is still good, and the good token still works.
            #expect(try await client.instances(cloud: Self.cloud, credential: Self.good, ids: ["c-1"], timeout: .seconds(10)).first?.found == true)
            await client.connection.close()
        }
    }

    @Test func noCommonVersionIsFailedPrecondition() async throws {
        try await Self.withShim { shim in
            let client = try await Self.connect(shim)
            let error = await rpcError {
                _ = try await client.handshake(controllerVersion: "future", versions: [2], timeout: .seconds(10))
            }
            #expect(error == RPCError(.failedPrecondition, "c-shim speaks protocol version 1 only"))
            let empty = await rpcError {
                _ = try await client.handshake(controllerVersion: "future", versions: [], timeout: .seconds(10))
            }
            #expect(empty?.code == .failedPrecondition)
            await client.connection.close()
        }
    }

    @Test func unknownMethodsAndServicesAreUnimplemented() async throws {
        try await Self.withShim { shim in
            let client = try await Self.connect(shim)
            let method = await rpcError {
                _ = try await client.connection.unary(
                    service: ProviderV1.serviceName, method: "Reboot", payload: ByteBuffer(), timeout: .seconds(10))
            }
            #expect(method?.code == .unimplemented)
            let service = await rpcError {
                _ = try await client.connection.unary(
                    service: "instancepoller.testing.v1.Echo", method: "Echo", payload: ByteBuffer(), timeout: .seconds(10))
            }
            #expect(service?.code == .unimplemented)
            // An undecodable method payload (field 3, length 255, no data) is InvalidArgument.
            let garbage = await rpcError {
                _ = try await client.connection.unary(
                    service: ProviderV1.serviceName, method: "Instances", payload: ByteBuffer(bytes: [0x1a, 0xff]), timeout: .seconds(10))
            }
            #expect(garbage?.code == .invalidArgument)
            #expect(try await client.health(timeout: .seconds(10)).status == .serving)
            await client.connection.close()
        }
    }

    /// containerd's Go ttrpc client (Tests/Fixtures/go/provider-client)
    /// against the C server: neither side is Swift.
    @Test func goTTRPCClientCallsTheCShim() async throws {
        let goClient = try await GoFixtures.binary("ttrpc-provider-client")
        try await Self.withShim { shim in
            func run(_ arguments: [String]) async throws -> [String: Any] {
                let child = try await ChildProcess.spawn(goClient, ["-socket", shim.socketPath] + arguments)
                let line = try #require(try await child.nextLine(.seconds(30)), "no JSON; stderr: \(child.stderr); shim stderr: \(shim.child.stderr)")
                #expect(try await child.waitForExit(.seconds(30)) == 0)
                return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            }

            let bad = try await run(["-credential", "token=wrong", "-ids", "c-1"])
            let errors = try #require(bad["errors"] as? [[String: Any]])
            #expect(errors.map { $0["method"] as? String } == ["Instances", "NetworkInterfaces"])
            #expect(errors.map { $0["code"] as? Int } == [16, 16])
            #expect(errors.allSatisfy { $0["message"] as? String == "token rejected" })
            #expect((bad["validate"] as? [String: Any])?["reason"] as? String == "token rejected")

            let good = try await run(["-credential", "token=letmein", "-ids", "c-1,x,c-2", "-shutdown"])
            #expect((good["errors"] as? [Any])?.isEmpty == true, "\(good["errors"] ?? "-")")
            let handshake = good["handshake"] as? [String: Any]
            #expect(handshake?["shim_name"] as? String == "c-shim")
            #expect((handshake?["capabilities"] as? [String: Any])?["max_batch_size"] as? Int == 100)
            #expect((good["health"] as? [String: Any])?["status"] as? String == "SERVING_STATUS_SERVING")
            #expect((good["validate"] as? [String: Any])?["valid"] as? Bool == true)
            let instances = try #require(good["instances"] as? [[String: Any]])
            #expect(instances.map { $0["instance_id"] as? String } == ["c-1", "x", "c-2"])
            #expect(instances.map { $0["found"] as? Bool } == [true, false, true])
            #expect(instances.map { ($0["status"] as? [String: Any])?["state"] as? String }
                == ["INSTANCE_STATE_RUNNING", nil, "INSTANCE_STATE_STOPPED"])
            let interfaces = try #require(good["interfaces"] as? [[String: Any]])
            let c1 = try #require(interfaces.first?["interfaces"] as? [[String: Any]])
            #expect(c1.map { $0["mac_address"] as? String } == ["02:c0:00:00:00:01", "02:c0:00:00:00:02"])
            let shadow = (c1.first?["shadow_addresses"] as? [[String: Any]])?.first
            #expect(shadow?["value"] as? String == "198.51.100.11")
            #expect(shadow?["scope"] as? String == "ADDRESS_SCOPE_PUBLIC")
            #expect(good["shutdown"] as? Bool == true)
            #expect(try await shim.child.waitForExit(.seconds(5)) == 0)
        }
    }

    // ------------------------------------------------------------ framing

    @Test func rawFramesEvenStreamOversizeAndIgnoredTypes() async throws {
        try await Self.withShim { shim in
            let raw = try await RawConnection(unixSocketPath: shim.socketPath)
            let health = RequestEnvelope(
                service: ProviderV1.serviceName, method: "Health", payload: try ProviderV1.HealthRequest().serializedBuffer())
            let allocator = ByteBufferAllocator()

            // An even stream id.
            try await raw.sendRequest(health, streamID: 2)
            let (evenID, even) = try await raw.nextResponse()
            #expect(evenID == 2)
            #expect(even.error?.code == .invalidArgument)

            // A frame over 4 MiB: discarded, answered on its stream, connection kept.
            var big = ByteBuffer()
            big.writeFrameHeader(FrameHeader(dataLength: UInt32(FrameHeader.maxDataLength + 1), streamID: 1, type: .request))
            big.writeRepeatingByte(0, count: FrameHeader.maxDataLength + 1)
            try await raw.write(big)
            let (oversizeID, oversize) = try await raw.nextResponse()
            #expect(oversizeID == 1)
            #expect(oversize.error?.code == .resourceExhausted)
            try await raw.sendRequest(health, streamID: 3)
            let (okID, ok) = try await raw.nextResponse()
            #expect(okID == 3 && ok.error == nil)
            #expect(try ProviderV1.HealthResponse(buffer: ok.payload).status == .serving)

            // Several frames in one write: a data frame (type 3) and a
            // response frame (type 2) are ignored, an undecodable Request is
            // InvalidArgument, and the requests are answered in order.
            var batch = ByteBuffer()
            var ignored = ByteBuffer(bytes: [1, 2, 3])
            batch.writeFrameHeader(FrameHeader(dataLength: 3, streamID: 5, type: .data))
            batch.writeBuffer(&ignored)
            batch.writeFrameHeader(FrameHeader(dataLength: 0, streamID: 7, type: .response))
            batch.writeFrameHeader(FrameHeader(dataLength: 2, streamID: 9, type: .request))
            batch.writeBytes([0x0a, 0xff])  // Request.service claiming 255 bytes it does not have
            var eleven = try FrameEncoding.request(health, streamID: 11, allocator: allocator).contiguous
            batch.writeBuffer(&eleven)
            var thirteen = try FrameEncoding.request(health, streamID: 13, allocator: allocator).contiguous
            batch.writeBuffer(&thirteen)
            try await raw.write(batch)
            let (badID, bad) = try await raw.nextResponse()
            #expect(badID == 9 && bad.error?.code == .invalidArgument)
            let (firstID, first) = try await raw.nextResponse()
            #expect(firstID == 11 && first.error == nil)
            let (secondID, second) = try await raw.nextResponse()
            #expect(secondID == 13 && second.error == nil)

            // A frame split across many writes.
            let split = try FrameEncoding.request(health, streamID: 15, allocator: allocator).contiguous
            for byte in split.readableBytesView {
                try await raw.write([byte])
            }
            let (splitID, splitResponse) = try await raw.nextResponse()
            #expect(splitID == 15 && splitResponse.error == nil)

            #expect(raw.isActive)
            await raw.close()
        }
    }

    // ------------------------------------------------------------ process contract

    /// A wall-clock contract: a fresh shim per attempt, at most three, as
    /// for the Swift shim (`measureWallClockContract`), so that one attempt
    /// slowed by the rest of the suite on two cores is not taken for the
    /// shim's own time.
    @Test func exitsWithin1sOfEOFOnStdinAndRemovesItsSocket() async throws {
        let measured = try await measureWallClockContract(within: .seconds(1)) {
            try await Self.withShim { shim in
                let start = ContinuousClock.now
                shim.child.closeStdin()
                let status = try await shim.child.waitForExit(.seconds(5))
                let elapsed = ContinuousClock.now - start
                #expect(status == 0)
                #expect(!FileManager.default.fileExists(atPath: shim.socketPath))
                return elapsed
            }
        }
        #expect(measured.last! < .seconds(1), "exited \(measured) after stdin closed")
    }

    @Test func exitsZeroOnSIGTERM() async throws {
        try await Self.withShim { shim in
            let client = try await Self.connect(shim)
            _ = try await client.health(timeout: .seconds(10))
            shim.child.terminate()
            #expect(try await shim.child.waitForExit(.seconds(5)) == 0)
            #expect(!FileManager.default.fileExists(atPath: shim.socketPath))
            await client.connection.close()
        }
    }

    @Test func answersShutdownThenExits() async throws {
        try await Self.withShim { shim in
            let client = try await Self.connect(shim)
            try await client.shutdown(drainTimeout: .seconds(1), timeout: .seconds(10))
            #expect(try await shim.child.waitForExit(.seconds(5)) == 0)
            #expect(!FileManager.default.fileExists(atPath: shim.socketPath))
            await client.connection.close()
        }
    }

    @Test func replacesAStaleSocket() async throws {
        try await Self.withShim(prepare: { path in
            SocketFiles.bindAndAbandon(path)
            #expect(FileManager.default.fileExists(atPath: path))
        }) { shim in
            #expect(try SocketFiles.mode(shim.socketPath) == 0o600)
            let client = try await Self.connect(shim)
            #expect(try await client.health(timeout: .seconds(10)).status == .serving)
            await client.connection.close()
        }
    }

    @Test func refusesToReplaceARegularFile() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("precious")
        _ = FileManager.default.createFile(atPath: path, contents: Data("keep".utf8))
        let run = try await Self.runToExit(environment: ["INSTANCEPOLLER_SOCKET": path])
        #expect(run.status != 0)
        #expect(run.stderr.contains(path), "stderr: \(run.stderr)")
        #expect(run.stdout == "")
        #expect(FileManager.default.contents(atPath: path) == Data("keep".utf8))
    }

    @Test func missingSocketVariableExits2WithOneLine() async throws {
        let run = try await Self.runToExit(environment: [:])
        #expect(run.status == 2)
        #expect(run.stderr.hasSuffix("\n") && run.stderr.filter { $0 == "\n" }.count == 1, "stderr: \(run.stderr)")
        #expect(run.stderr.contains("INSTANCEPOLLER_SOCKET"))
        #expect(run.stdout == "")
    }
}
