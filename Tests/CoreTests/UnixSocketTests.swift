import Core
import Support
import Foundation
import Logging
import NIOCore
import NIOPosix
import Testing
import TestSupport
import Echo

@Suite("Unix sockets and peers")
struct UnixSocketTests {


    @Test func socketIsCreated0600() async throws {
        try await RPCFixture.with { fixture in
            let socketMode = try SocketFiles.mode(fixture.socketPath)
            let directoryMode = try SocketFiles.mode(fixture.directory.path)
            #expect(socketMode == 0o600)
            #expect(directoryMode == 0o700)
        }
    }

    @Test func bindRefusesAnOpenDirectory() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        chmod(directory.path, 0o755)
        await #expect {
            _ = try await RPCServer.bind(unixSocketPath: directory.file("x.sock"), registry: RPCServiceRegistry(), logger: LogCapture().logger())
        } throws: { error in
            "\(error)".contains("must be private")
        }
    }

    @Test func staleSocketIsRemovedFirst() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("stale.sock")
        // A socket file whose listener is gone, as a crashed process leaves.
        SocketFiles.bindAndAbandon(path)
        #expect(FileManager.default.fileExists(atPath: path))
        var registry = RPCServiceRegistry()
        EchoService.register(into: &registry)
        let second = try await RPCServer.bind(unixSocketPath: path, registry: registry, logger: LogCapture().logger())
        try await second.serving {
            let client = try await RPCClient.connect(unixSocketPath: path, logger: LogCapture().logger())
            #expect(try await client.call(EchoService.echo, RPCFixture.echoRequest([1])).payload == Data([1]))
            await client.close()
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func aFileThatIsNotASocketIsNeverRemoved() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("precious")
        _ = FileManager.default.createFile(atPath: path, contents: Data("keep".utf8))
        await #expect {
            _ = try await RPCServer.bind(unixSocketPath: path, registry: RPCServiceRegistry(), logger: LogCapture().logger())
        } throws: { error in
            "\(error)".contains("not a socket")
        }
        #expect(FileManager.default.contents(atPath: path) == Data("keep".utf8))
    }

    @Test func tooLongPathIsRefusedWithItsLength() async throws {
        let path = "/tmp/" + String(repeating: "x", count: 120)
        await #expect {
            _ = try await RPCServer.bind(unixSocketPath: path, registry: RPCServiceRegistry(), logger: LogCapture().logger())
        } throws: { error in
            "\(error)".contains("125 bytes")
        }
    }

    @Test func bothSidesSeeTheirPeerViaSOPeerCred() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            #expect(client.peer.pid == getpid())
            #expect(client.peer.uid == getuid())
            let response = try await client.unary(service: RPCFixture.service, method: "Peer", payload: ByteBuffer())
            #expect(String(buffer: response.payload) == "\(getpid()) \(getuid())")
            await client.close()
        }
    }

    @Test func serverRefusesAPeerOutsideItsPolicyAndLogsWho() async throws {
        let onlyUid4242 = PeerPolicy(summary: "uid 4242") { $0.uid == 4242 }
        try await RPCFixture.with(configuration: .init(peerPolicy: onlyUid4242)) { fixture in
            // The kernel accepts the connection; the server closes it unread.
            // The client learns it while connecting or at its first call.
            let error = await rpcError {
                let client = try await fixture.client()
                _ = try await client.call(EchoService.echo, RPCFixture.echoRequest(), timeout: .seconds(5))
            }
            #expect(error?.code == .unavailable)
            let refusal = fixture.logs.all.first { $0.message.contains("refused connection") }
            #expect(refusal?.metadata["peer_uid"] == "\(getuid())")
            #expect(refusal?.metadata["peer_pid"] == "\(getpid())")
            #expect(refusal?.level == Logger.Level.warning)
        }
    }

    @Test func clientRefusesAServerOutsideItsPolicy() async throws {
        try await RPCFixture.with { fixture in
            let logs = LogCapture()
            let error = await rpcError {
                _ = try await RPCClient.connect(
                    unixSocketPath: fixture.socketPath,
                    peerPolicy: PeerPolicy(summary: "uid 4242") { $0.uid == 4242 },
                    logger: logs.logger()
                )
            }
            #expect(error?.code == .permissionDenied)
            #expect(logs.all.contains { $0.message.contains("refused server") && $0.metadata["peer_uid"] == "\(getuid())" })
        }
    }

    @Test func sameUserOrRootPolicy() {
        let policy = PeerPolicy(sameUserAs: 1000)
        #expect(policy.allows(PeerCredentials(pid: 1, uid: 1000, gid: 1)))
        #expect(policy.allows(PeerCredentials(pid: 1, uid: 0, gid: 0)))
        #expect(!policy.allows(PeerCredentials(pid: 1, uid: 1001, gid: 1000)))
    }
}

