import Core
import Support
import Foundation
import Logging
import NIOCore
import SwiftProtobuf
import Testing
import TestSupport
import Echo

/// Both directions against containerd's Go ttrpc 1.1.1: the Go client calls
/// the Swift server, and the Swift client calls the Go server, including an
/// error status, metadata and a deadline.
@Suite("Interop with containerd Go ttrpc 1.1.1", .serialized)
struct GoInteropTests {
    /// The Go client's checks (Tests/Fixtures/go/echo-client): `deadline`
    /// lets either side's timer end the call, `deadline-server` only the
    /// Swift server's handling of `timeout_nano`.
    static let checks = ["echo", "error-status", "deadline", "deadline-server", "unimplemented", "concurrent", "large"]

    @Test func goClientCallsSwiftServer() async throws {
        let client = try await GoFixtures.binary("ttrpc-echo-client")
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var registry = RPCServiceRegistry()
        EchoService.register(into: &registry)
        let logs = LogCapture()
        let server = try await RPCServer.bind(unixSocketPath: directory.file("swift.sock"), registry: registry, logger: logs.logger())

        let child = try await ChildProcess.spawn(client, ["-socket", server.socketPath, "-mode", "interop"])
        let status = try await server.serving { try await child.waitForExit(.seconds(120)) }

        let lines = try await child.output().stdout.split(separator: "\n").map(String.init)
        for check in Self.checks {
            let passed = lines.contains { $0 == "PASS \(check)" || $0.hasPrefix("PASS \(check) ") }
            #expect(passed, "Go client check \(check) did not pass: \(lines)")
        }
        #expect(!lines.contains { $0.hasPrefix("FAIL") }, "\(lines)")
        #expect(status == 0, "Go client exited \(status); stderr: \(child.stderr)")
    }

    @Test func swiftClientCallsGoServer() async throws {
        let serverBinary = try await GoFixtures.binary("ttrpc-echo-server")
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("go.sock")
        let goServer = try await ChildProcess.spawn(serverBinary, ["-socket", path])
        #expect(try await goServer.nextLine() == "ready")

        let logs = LogCapture()
        let client = try await RPCClient.connect(unixSocketPath: path, logger: logs.logger())
        #expect(client.peer.pid == goServer.pid)

        // Payload, metadata in both directions' view, and the deadline the server saw.
        var request = EchoService.Request()
        request.payload = Data("hello from swift".utf8)
        let echoed = try await client.call(
            EchoService.echo, request, metadata: [("k1", "v1"), ("k1", "v2"), ("k2", "v3")], timeout: .seconds(10)
        )
        #expect(echoed.payload == Data("hello from swift".utf8))
        #expect(echoed.metadata.map { "\($0.key)=\($0.value)" } == ["k1=v1", "k1=v2", "k2=v3"])
        #expect(echoed.timeoutNano > 0 && echoed.timeoutNano <= Duration.seconds(10).totalNanoseconds)

        // An error status from Go arrives typed.
        request = EchoService.Request()
        request.failCode = 5
        request.failMessage = "no such thing"
        await #expect(throws: RPCError(.notFound, "no such thing")) {
            _ = try await client.call(EchoService.echo, request)
        }

        // A deadline: the Go handler waits 30 s, the call gives up at 300 ms.
        request = EchoService.Request()
        request.delayNano = Duration.seconds(30).totalNanoseconds
        let start = ContinuousClock.now
        let deadline = await rpcError { _ = try await client.call(EchoService.echo, request, timeout: .milliseconds(300)) }
        #expect(deadline?.code == .deadlineExceeded)
        #expect(ContinuousClock.now - start < .seconds(3))

        // Unknown method and service.
        let nope = await rpcError { _ = try await client.unary(service: EchoService.serviceName, method: "Nope", payload: ByteBuffer()) }
        #expect(nope?.code == .unimplemented)
        let noService = await rpcError { _ = try await client.unary(service: "no.Such", method: "Echo", payload: ByteBuffer()) }
        #expect(noService?.code == .unimplemented)

        // 1000 concurrent calls on the one connection.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<1000 {
                group.addTask {
                    var call = EchoService.Request()
                    call.payload = Data("call-\(index)".utf8)
                    call.delayNano = Int64(index % 7) * 1_000_000
                    let response = try await client.call(EchoService.echo, call, timeout: .seconds(30))
                    #expect(response.payload == Data("call-\(index)".utf8))
                }
            }
            try await group.waitForAll()
        }

        // 1 MiB each way.
        request = EchoService.Request()
        request.payload = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        #expect(try await client.call(EchoService.echo, request).payload == request.payload)
        await client.close()

        // Raw frames: Go's answers to an oversize frame and an even stream id.
        let raw = try await RawConnection(unixSocketPath: path)
        var big = ByteBuffer()
        big.writeFrameHeader(FrameHeader(dataLength: UInt32(FrameHeader.maxDataLength + 1), streamID: 1, type: .request))
        big.writeRepeatingByte(0, count: FrameHeader.maxDataLength + 1)
        try await raw.write(big)
        let (oversizeID, oversize) = try await raw.nextResponse()
        #expect(oversizeID == 1 && oversize.error?.code == .resourceExhausted)
        var ping = EchoService.Request()
        ping.payload = Data([1])
        let envelope = RequestEnvelope(service: EchoService.serviceName, method: "Echo", payload: try ping.serializedBuffer())
        try await raw.sendRequest(envelope, streamID: 2)
        let (evenID, even) = try await raw.nextResponse()
        #expect(evenID == 2 && even.error?.code == .invalidArgument)
        try await raw.sendRequest(envelope, streamID: 3)
        let (okID, ok) = try await raw.nextResponse()
        #expect(okID == 3 && ok.error == nil)
        await raw.close()

        // Closing stdin tells the Go server to go.
        goServer.closeStdin()
        #expect(try await goServer.waitForExit(.seconds(10)) == 0)
    }
}
