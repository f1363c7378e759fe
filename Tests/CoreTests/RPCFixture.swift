import Core
import Support
import Foundation
import Logging
import NIOCore
import TestSupport
import Echo

/// A server on a private temporary socket with the Echo service and a few
/// test methods, and helpers to reach it.
struct RPCFixture {
    static let service = "instancepoller.testing.v1.Fixture"

    let directory: TemporaryDirectory
    let server: RPCServer
    let logs: LogCapture
    /// Signalled with the stream's marker each time a `Hang` handler is cancelled.
    let hangCancelled: TestEvent<String>
    /// Signalled each time a `Hang` handler starts.
    let hangStarted: TestEvent<String>
    /// Signalled when a `Held` handler starts; it answers once ``releaseHeld`` is.
    let heldStarted: TestEvent<String>
    let releaseHeld: TestEvent<Void>

    var socketPath: String { server.socketPath }

    private static func bind(configuration: RPCServer.Configuration) async throws -> RPCFixture {
        let directory = try TemporaryDirectory()
        let logs = LogCapture()
        let hangCancelled = TestEvent<String>()
        let hangStarted = TestEvent<String>()
        let heldStarted = TestEvent<String>()
        let releaseHeld = TestEvent<Void>()
        var registry = RPCServiceRegistry()
        EchoService.register(into: &registry)
        // Waits until cancelled; reports start and cancellation.
        registry.register(service: service, method: "Hang") { payload, _ in
            let marker = String(buffer: payload)
            hangStarted.signal(marker)
            await waitUntilCancelled()
            hangCancelled.signal(marker)
            throw CancellationError()
        }
        // Answers (its payload) once the test releases it.
        registry.register(service: service, method: "Held") { payload, _ in
            heldStarted.signal(String(buffer: payload))
            try await releaseHeld.wait(.seconds(60), "the test to release a held call")
            return RPCResponse(payload: payload)
        }
        // Answers with response metadata.
        registry.register(service: service, method: "Meta") { payload, context in
            var out: Metadata = [("served-by", "fixture")]
            for entry in context.metadata { out.append("echo-" + entry.key, entry.value) }
            return RPCResponse(payload: payload, metadata: out)
        }
        // Answers with more than a frame can carry.
        registry.register(service: service, method: "Big") { _, _ in
            RPCResponse(payload: ByteBuffer(repeating: 1, count: FrameHeader.maxDataLength + 10))
        }
        // Throws an error that is not an RPCError.
        registry.register(service: service, method: "Throw") { _, _ in
            struct Oops: Error, CustomStringConvertible { var description: String { "oops in handler" } }
            throw Oops()
        }
        // Throws an error that chooses its own status, with a secret in
        // what it holds beside its message.
        registry.register(service: service, method: "ThrowConvertible") { _, _ in
            throw ChoosingError(code: .unavailable, message: "the database is busy", held: "secret-in-the-cause")
        }
        // Reports who called.
        registry.register(service: service, method: "Peer") { _, context in
            RPCResponse(payload: ByteBuffer(string: "\(context.peer?.pid ?? -1) \(context.peer?.uid ?? 9999)"))
        }
        let server = try await RPCServer.bind(
            unixSocketPath: directory.file("rpc.sock"),
            registry: registry,
            configuration: configuration,
            logger: logs.logger(label: "server")
        )
        return RPCFixture(
            directory: directory, server: server, logs: logs, hangCancelled: hangCancelled, hangStarted: hangStarted,
            heldStarted: heldStarted, releaseHeld: releaseHeld
        )
    }

    /// Runs `body` with a serving fixture and always closes it afterwards.
    static func with(
        configuration: RPCServer.Configuration = .init(),
        _ body: (RPCFixture) async throws -> Void
    ) async throws {
        let fixture = try await bind(configuration: configuration)
        defer { fixture.directory.remove() }
        try await fixture.server.serving { try await body(fixture) }
    }

    func client(peerPolicy: PeerPolicy = .sameUserOrRoot) async throws -> RPCClient {
        try await RPCClient.connect(unixSocketPath: socketPath, peerPolicy: peerPolicy, logger: logs.logger(label: "client"))
    }

    func raw() async throws -> RawConnection {
        try await RawConnection(unixSocketPath: socketPath)
    }

    static func echoRequest(_ payload: [UInt8] = [], delay: Duration = .zero, fail: RPCStatusCode? = nil, message: String = "") -> EchoService.Request {
        var request = EchoService.Request()
        request.payload = .init(payload)
        request.delayNano = delay.totalNanoseconds
        request.failCode = fail?.rawValue ?? 0
        request.failMessage = message
        return request
    }
}

/// An error that says which status it is, and holds something (`held`)
/// that must never leave the process.
struct ChoosingError: RPCErrorConvertible, CustomStringConvertible {
    var code: RPCStatusCode
    var message: String
    var held: String

    var rpcError: RPCError { RPCError(code, message) }
    var description: String { "\(message) (holding \(held))" }
}
