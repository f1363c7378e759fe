import Core
import Support
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Testing
import TestSupport
import Echo

/// Every status path of the server, driven over a real socket with raw
/// frames so that malformed input can be sent.
@Suite("RPC server status paths")
struct RPCServerTests {
    static func echoEnvelope(_ request: EchoService.Request = RPCFixture.echoRequest([1, 2, 3]), timeoutNanos: Int64 = 0) throws -> RequestEnvelope {
        RequestEnvelope(
            service: EchoService.serviceName, method: "Echo", payload: try request.serializedBuffer(), timeoutNanos: timeoutNanos
        )
    }

    @Test func echoSucceedsWithUnsetStatus() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            try await raw.sendRequest(try Self.echoEnvelope(), streamID: 1)
            let (streamID, response) = try await raw.nextResponse()
            #expect(streamID == 1)
            #expect(response.error == nil)
            #expect(Array(try EchoService.Response(buffer: response.payload).payload) == [1, 2, 3])
            await raw.close()
        }
    }

    @Test func unknownServiceAndMethodAreUnimplemented() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            try await raw.sendRequest(RequestEnvelope(service: "no.such.Service", method: "Echo", payload: ByteBuffer()), streamID: 1)
            let (_, first) = try await raw.nextResponse()
            #expect(first.error?.code == .unimplemented)
            #expect(first.error?.message.contains("no.such.Service") == true)
            try await raw.sendRequest(RequestEnvelope(service: EchoService.serviceName, method: "Shout", payload: ByteBuffer()), streamID: 3)
            let (_, second) = try await raw.nextResponse()
            #expect(second.error?.code == .unimplemented)
            #expect(second.error?.message.contains("no method Shout") == true)
            await raw.close()
        }
    }

    @Test func evenStreamIDIsInvalidArgumentOnThatStream() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            try await raw.sendRequest(try Self.echoEnvelope(), streamID: 2)
            let (streamID, response) = try await raw.nextResponse()
            #expect(streamID == 2)
            #expect(response.error?.code == .invalidArgument)
            await raw.close()
        }
    }

    @Test func undecodableEnvelopeIsInvalidArgument() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            var frame = ByteBuffer()
            frame.writeFrameHeader(FrameHeader(dataLength: 3, streamID: 5, type: .request))
            frame.writeBytes([0x0A, 0x09, 0x41])  // service claims 9 bytes, has 1
            try await raw.write(frame)
            let (streamID, response) = try await raw.nextResponse()
            #expect(streamID == 5)
            #expect(response.error?.code == .invalidArgument)
            #expect(response.error?.message.contains("malformed request") == true)
            // The connection is still usable.
            try await raw.sendRequest(try Self.echoEnvelope(), streamID: 7)
            #expect(try await raw.nextResponse().1.error == nil)
            await raw.close()
        }
    }

    @Test func undecodableBodyIsInvalidArgument() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            let envelope = RequestEnvelope(service: EchoService.serviceName, method: "Echo", payload: ByteBuffer(bytes: [0xFF, 0xFF, 0xFF]))
            try await raw.sendRequest(envelope, streamID: 1)
            let (_, response) = try await raw.nextResponse()
            #expect(response.error?.code == .invalidArgument)
            #expect(response.error?.message.contains("EchoRequest") == true)
            await raw.close()
        }
    }

    @Test func oversizeFrameIsResourceExhaustedAndTheConnectionStays() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            let length = FrameHeader.maxDataLength + 100
            var big = ByteBuffer()
            big.writeFrameHeader(FrameHeader(dataLength: UInt32(length), streamID: 9, type: .request))
            big.writeRepeatingByte(0x42, count: length)
            try await raw.write(big)
            let (streamID, response) = try await raw.nextResponse()
            #expect(streamID == 9)
            #expect(response.error?.code == .resourceExhausted)
            #expect(response.error?.message.contains("\(length) bytes") == true)
            try await raw.sendRequest(try Self.echoEnvelope(), streamID: 11)
            let (nextID, next) = try await raw.nextResponse()
            #expect(nextID == 11 && next.error == nil)
            await raw.close()
        }
    }

    @Test func unknownFrameTypesAreIgnored() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            var frames = ByteBuffer()
            for type in [FrameType.data, FrameType(rawValue: 9), .response] {
                frames.writeFrameHeader(FrameHeader(dataLength: 2, streamID: 1, type: type))
                frames.writeBytes([1, 2])
            }
            try await raw.write(frames)
            try await raw.sendRequest(try Self.echoEnvelope(), streamID: 13)
            // The first answer is the echo's: nothing was sent for the others.
            let (streamID, response) = try await raw.nextResponse()
            #expect(streamID == 13 && response.error == nil)
            await raw.close()
        }
    }

    @Test func deadlineCancelsTheHandlerAndAnswersDeadlineExceeded() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            let start = ContinuousClock.now
            let envelope = RequestEnvelope(
                service: RPCFixture.service, method: "Hang", payload: ByteBuffer(string: "deadline"),
                timeoutNanos: Duration.milliseconds(100).totalNanoseconds
            )
            try await raw.sendRequest(envelope, streamID: 1)
            let (_, response) = try await raw.nextResponse()
            #expect(response.error?.code == .deadlineExceeded)
            #expect(ContinuousClock.now - start >= .milliseconds(100))
            #expect(try await fixture.hangCancelled.wait() == "deadline")
            await raw.close()
        }
    }

    @Test func expiredDeadlineIsAnsweredWithoutRunning() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            try await raw.sendRequest(try Self.echoEnvelope(timeoutNanos: -1), streamID: 1)
            #expect(try await raw.nextResponse().1.error?.code == .deadlineExceeded)
            await raw.close()
        }
    }

    @Test func closingTheConnectionCancelsItsHandlers() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            for (id, marker) in [(UInt32(1), "a"), (3, "b")] {
                try await raw.sendRequest(RequestEnvelope(service: RPCFixture.service, method: "Hang", payload: ByteBuffer(string: marker)), streamID: id)
            }
            let started = [try await fixture.hangStarted.wait(), try await fixture.hangStarted.wait()]
            #expect(Set(started) == ["a", "b"])
            await raw.close()
            let cancelled = [try await fixture.hangCancelled.wait(), try await fixture.hangCancelled.wait()]
            #expect(Set(cancelled) == ["a", "b"])
        }
    }

    @Test func handlerErrorsBecomeUnknownWithTheirDescription() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            try await raw.sendRequest(RequestEnvelope(service: RPCFixture.service, method: "Throw", payload: ByteBuffer()), streamID: 1)
            let error = try await raw.nextResponse().1.error
            #expect(error == RPCError(.unknown, "oops in handler"))
            await raw.close()
        }
    }

    @Test func duplicateStreamIDInFlightIsRefused() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            let hang = RequestEnvelope(service: RPCFixture.service, method: "Hang", payload: ByteBuffer(string: "dup"))
            try await raw.sendRequest(hang, streamID: 1)
            _ = try await fixture.hangStarted.wait()
            try await raw.sendRequest(try Self.echoEnvelope(), streamID: 1)
            let (streamID, response) = try await raw.nextResponse()
            #expect(streamID == 1)
            #expect(response.error?.code == .invalidArgument)
            await raw.close()
        }
    }
}

/// The server's bounds on what clients hold: connections, idle time, the
/// time and memory of unfinished frames, calls in flight, and the peer
/// check on every request. Small limits are injected so that each test is
/// quick; every wait is on an event, bounded by a timeout.
@Suite("RPC server limits")
struct RPCServerLimitTests {
    static func limits(_ change: (inout ServerLimits) -> Void) -> RPCServer.Configuration {
        var limits = ServerLimits()
        change(&limits)
        return RPCServer.Configuration(limits: limits)
    }

    /// Echoes `payload` on `streamID` and checks the answer.
    static func echo(_ raw: RawConnection, streamID: UInt32, payload: [UInt8] = [7]) async throws {
        try await raw.sendRequest(try RPCServerTests.echoEnvelope(RPCFixture.echoRequest(payload)), streamID: streamID)
        let (answered, response) = try await raw.nextResponse()
        #expect(answered == streamID)
        #expect(response.error == nil)
    }

    /// Waits until the server logged a closed connection leaving `open` open.
    static func waitForOpen(_ fixture: RPCFixture, _ open: Int) async throws {
        try await withTimeout(.seconds(10), "the server to see connections close") {
            await fixture.logs.waitFor { $0.message == "connection closed" && $0.metadata["open"] == "\(open)" }
        }
    }

    @Test func overTheConnectionCapAConnectionIsClosedAtOnceAndAnOperatorGetsInAfterTheFlood() async throws {
        try await RPCFixture.with(configuration: Self.limits { $0.maxConnections = 4 }) { fixture in
            var flood: [RawConnection] = []
            for index in 0..<4 {
                let raw = try await fixture.raw()
                try await Self.echo(raw, streamID: 1)  // accepted and served
                flood.append(raw)
                #expect(fixture.server.limitStats.connections == index + 1)
            }
            // The fifth is accepted by the kernel and closed by the server at once.
            let refused = try await fixture.raw()
            #expect(try await refused.next() == nil, "closed without an answer")
            #expect(fixture.server.limitStats.hits(.connections) == 1)
            let warning = try #require(fixture.logs.all.first { $0.message.hasPrefix("refused connection: 4 connections are open") })
            #expect(warning.level == .warning)
            #expect(warning.metadata["limit"] == "connections")
            #expect(warning.metadata["socket"] == fixture.socketPath)
            #expect(warning.metadata["peer_pid"] == "\(getpid())")
            #expect(warning.metadata["peer_uid"] == "\(getuid())")
            // The flood ends: the operator's connection is served.
            for raw in flood { await raw.close() }
            try await Self.waitForOpen(fixture, 0)
            let operatorConnection = try await fixture.raw()
            try await Self.echo(operatorConnection, streamID: 1)
            await operatorConnection.close()
        }
    }

    @Test func anIdleConnectionIsClosedButOneWithACallInFlightIsKept() async throws {
        try await RPCFixture.with(configuration: Self.limits { $0.idleTimeout = .seconds(2) }) { fixture in
            // A long call in flight, its connection silent from now on.
            let busy = try await fixture.raw()
            try await busy.sendRequest(RequestEnvelope(service: RPCFixture.service, method: "Hang", payload: ByteBuffer(string: "busy")), streamID: 1)
            #expect(try await fixture.hangStarted.wait() == "busy")
            // Connected after the busy one went quiet: idle later than it.
            let idle = try await fixture.raw()
            try await withTimeout(.seconds(10), "the idle connection to be closed") { try await idle.closeFuture.get() }
            #expect(busy.isActive, "a call in flight keeps its connection")
            #expect(fixture.server.limitStats.hits(.idleTimeout) == 1)
            let line = try #require(fixture.logs.all.first { $0.metadata["limit"] == "idle_timeout" })
            #expect(line.message.hasPrefix("closing idle connection"))
            await busy.close()
            #expect(try await fixture.hangCancelled.wait() == "busy")
        }
    }

    @Test func aFrameNotCompletedInTimeClosesItsConnection() async throws {
        try await RPCFixture.with(configuration: Self.limits { $0.frameTimeout = .milliseconds(300) }) { fixture in
            let slow = try await fixture.raw()
            var partial = ByteBuffer()
            partial.writeFrameHeader(FrameHeader(dataLength: 100, streamID: 1, type: .request))
            partial.writeBytes([UInt8](repeating: 0x0A, count: 10))
            try await slow.write(partial)
            // Other connections are served meanwhile.
            let other = try await fixture.raw()
            try await Self.echo(other, streamID: 1)
            #expect(try await slow.next() == nil, "closed without an answer")
            #expect(fixture.server.limitStats.hits(.frameTimeout) == 1)
            #expect(other.isActive)
            let line = try #require(fixture.logs.all.first { $0.metadata["limit"] == "frame_timeout" })
            #expect(line.message == "closing connection: a frame was not completed within 0.3 seconds")
            await other.close()
        }
    }

    @Test func unfinishedFramesShareOneMemoryBudget() async throws {
        let budget = 6 << 20
        let configuration = Self.limits {
            $0.bufferedRequestMemory = budget
            // Those within the budget are closed by this instead: long
            // enough for all twelve to arrive while the whole suite loads
            // two cores (5 s was not: every connection timed out before the
            // budget was reached).
            $0.frameTimeout = .seconds(15)
        }
        try await RPCFixture.with(configuration: configuration) { fixture in
            // Twelve connections each announce a 4 MiB - 1 frame and send 1 MiB of it.
            let count = 12
            let body = ByteBuffer(repeating: 0x0A, count: 1 << 20)
            var connections: [RawConnection] = []
            for streamID in 0..<count {
                let raw = try await fixture.raw()
                var head = ByteBuffer()
                head.writeFrameHeader(FrameHeader(dataLength: UInt32(FrameHeader.maxDataLength - 1), streamID: UInt32(streamID * 2 + 1), type: .request))
                raw.writeWithoutWaiting(head)
                raw.writeWithoutWaiting(body)
                connections.append(raw)
            }
            for raw in connections {
                try await withTimeout(.seconds(30), "each connection to be closed") { try await raw.closeFuture.get() }
            }
            // The server's side of the last close, which gives its bytes back.
            try await Self.waitForOpen(fixture, 0)
            let stats = fixture.server.limitStats
            #expect(stats.peakBufferedRequestBytes <= budget, "never more than the budget held")
            #expect(stats.peakBufferedRequestBytes >= 4 << 20, "the budget's worth of frames was held")
            #expect(stats.hits(.requestMemory) >= 1, "those past the budget are closed")
            #expect(stats.hits(.requestMemory) + stats.hits(.frameTimeout) == count)
            #expect(stats.bufferedRequestBytes == 0, "closed connections give their bytes back")
            let line = try #require(fixture.logs.all.first { $0.metadata["limit"] == "request_memory" })
            #expect(line.message.contains("exceed the request memory budget of \(budget) bytes"))
            // A small request still gets through.
            let operatorConnection = try await fixture.raw()
            try await Self.echo(operatorConnection, streamID: 1)
            await operatorConnection.close()
        }
    }

    @Test func atTheInFlightCapFurtherCallsWaitForASlot() async throws {
        try await RPCFixture.with(configuration: Self.limits { $0.requestsPerConnection = 2 }) { fixture in
            let raw = try await fixture.raw()
            let slow = RPCFixture.echoRequest([1], delay: .milliseconds(300))
            // One write: the third frame arrives while the first two are
            // in flight, however slowly this process gets to run.
            var frames = ByteBuffer()
            for (streamID, request) in [(UInt32(1), slow), (3, slow), (5, RPCFixture.echoRequest([5]))] {
                var frame = try FrameEncoding.request(RPCServerTests.echoEnvelope(request), streamID: streamID, allocator: ByteBufferAllocator()).contiguous
                frames.writeBuffer(&frame)
            }
            try await raw.write(frames)
            var order: [UInt32] = []
            for _ in 0..<3 {
                let (streamID, response) = try await raw.nextResponse()
                #expect(response.error == nil)
                order.append(streamID)
            }
            #expect(order.first != 5 && Set(order) == [1, 3, 5], "the third call waited for one of the first two: \(order)")
            #expect(fixture.server.limitStats.hits(.backpressure) >= 1)
            await raw.close()
        }
    }

    @Test func aPipelinerThatDoesNotReadIsNoLongerReadFromAndOthersAreServed() async throws {
        try await RPCFixture.with { fixture in
            let pipeliner = try await RawConnection(unixSocketPath: fixture.socketPath, reading: false)
            // 200 calls with 64 KiB answers (12.5 MiB), none of them read.
            let request = try RPCServerTests.echoEnvelope(RPCFixture.echoRequest([UInt8](repeating: 3, count: 64 << 10)))
            var bytes = ByteBuffer()
            for index in 0..<200 {
                bytes.writeImmutableBuffer(try FrameEncoding.request(request, streamID: UInt32(index * 2 + 1), allocator: .init()).contiguous)
            }
            pipeliner.writeWithoutWaiting(bytes)
            try await withTimeout(.seconds(10), "the server to stop reading") {
                await fixture.logs.waitFor { $0.message == "stopped reading from a connection: the peer is not reading its answers" }
            }
            let stats = fixture.server.limitStats
            #expect(stats.hits(.backpressure) == 1)
            #expect(stats.peakBufferedRequestBytes <= 8 << 20, "what was read but not served stays bounded: \(stats.peakBufferedRequestBytes)")
            // Another client is served meanwhile.
            let other = try await fixture.raw()
            try await Self.echo(other, streamID: 1)
            // Once the pipeliner reads, every call is answered.
            try await pipeliner.startReading()
            var answered = Set<UInt32>()
            for _ in 0..<200 {
                let (streamID, response) = try await pipeliner.nextResponse()
                #expect(response.error == nil)
                answered.insert(streamID)
            }
            #expect(answered.count == 200)
            #expect(fixture.server.limitStats.bufferedRequestBytes == 0)
            await other.close()
            await pipeliner.close()
        }
    }

    @Test func thePeerIsCheckedAgainstItsCurrentUIDs() async throws {
        let me = PeerCredentials(pid: getpid(), uid: getuid(), gid: getgid())
        let uids = try #require(PeerCredentials.currentUIDs(ofProcess: getpid()))
        #expect(uids == PeerCredentials.ProcessUIDs(real: getuid(), effective: geteuid()))
        #expect(me.recheck(against: .sameUserOrRoot) == nil)
        let someoneElse = PeerPolicy(summary: "uid 54321") { $0.uid == 54321 }
        #expect(me.recheck(against: someoneElse) == "peer process \(getpid()) now runs with real uid \(getuid()), not uid 54321")

        // A process that has exited.
        let child = try await ChildProcess.spawn("/bin/true", [])
        _ = try await child.waitForExit()
        let gone = PeerCredentials(pid: child.pid, uid: getuid(), gid: getgid())
        #expect(gone.recheck(against: .sameUserOrRoot) == "peer process \(child.pid) is gone")
    }

    @Test func aConnectionWhosePeerNoLongerPassesIsRefusedPerRequest() async throws {
        // The policy admits the connection, then changes its mind: each
        // request is checked again, not only the accept.
        let admitted = NIOLockedValueBox(true)
        let policy = PeerPolicy(summary: "admitted once") { _ in admitted.withLockedValue { $0 } }
        try await RPCFixture.with(configuration: RPCServer.Configuration(peerPolicy: policy)) { fixture in
            let raw = try await fixture.raw()
            try await Self.echo(raw, streamID: 1)
            admitted.withLockedValue { $0 = false }
            try await raw.sendRequest(try RPCServerTests.echoEnvelope(), streamID: 3)
            let (streamID, response) = try await raw.nextResponse()
            #expect(streamID == 3)
            #expect(response.error?.code == .permissionDenied)
            #expect(response.error?.message == "peer process \(getpid()) now runs with real uid \(getuid()), not admitted once")
            #expect(fixture.server.limitStats.hits(.peer) == 1)
            await raw.close()
        }
    }
}

/// Stopping a server: the accept loop owns every connection, so a stop
/// leaves none open; a graceful one answers what is in flight first.
@Suite("RPC server shutdown")
struct RPCServerShutdownTests {
    static func call(_ method: String, _ marker: String) -> RequestEnvelope {
        RequestEnvelope(service: RPCFixture.service, method: method, payload: ByteBuffer(string: marker))
    }

    @Test func aGracefulShutdownAnswersTheCallsInFlightRefusesNewOnesAndLeavesNoConnectionOpen() async throws {
        try await RPCFixture.with { fixture in
            let (answered, hanging, idle) = (try await fixture.raw(), try await fixture.raw(), try await fixture.raw())
            try await idle.sendRequest(try RPCServerTests.echoEnvelope(), streamID: 1)
            #expect(try await idle.nextResponse().1.error == nil)
            try await answered.sendRequest(Self.call("Held", "answered"), streamID: 1)
            try await hanging.sendRequest(Self.call("Hang", "hanging"), streamID: 1)
            #expect(try await fixture.heldStarted.wait() == "answered")
            #expect(try await fixture.hangStarted.wait() == "hanging")
            let path = fixture.socketPath
            #expect(try await SocketFiles.sockets(namedBy: path) == 4, "the listener and three connections")
            #expect(fixture.server.connectionCount == 3)

            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await fixture.server.shutdown(drainTimeout: .seconds(60), hangUpGrace: .seconds(60)) }
                // Draining once the listener is closed: a new call is refused...
                try await fixture.server.closeFuture.get()
                try await idle.sendRequest(try RPCServerTests.echoEnvelope(), streamID: 3)
                let refused = try await idle.nextResponse()
                #expect(refused.streamID == 3 && refused.1.error == RPCError(.unavailable, "the server is shutting down"))
                // ...and one in flight is answered.
                fixture.releaseHeld.signal()
                let (streamID, response) = try await answered.nextResponse()
                #expect(streamID == 1 && response.error == nil && String(buffer: response.payload) == "answered")
                // A call that never ends holds the drain until close() cuts it short.
                await fixture.server.close()
                #expect(try await fixture.hangCancelled.wait() == "hanging")
                try await group.waitForAll()
            }
            for connection in [answered, hanging, idle] {
                try await withTimeout(.seconds(10), "the server to close each connection") { try await connection.closeFuture.get() }
            }
            #expect(fixture.server.connectionCount == 0)
            #expect(fixture.server.limitStats.connections == 0)
            #expect(fixture.server.callsInFlight == 0)
            #expect(try await SocketFiles.sockets(namedBy: path) == 0, "no listener and no connection left")
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }

    @Test func aGracefulShutdownEndsAsSoonAsTheClientsHaveHungUp() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.raw()
            try await client.sendRequest(Self.call("Held", "last"), streamID: 1)
            #expect(try await fixture.heldStarted.wait() == "last")
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Neither bound is reached: the answer goes out, the client leaves.
                group.addTask {
                    try await withTimeout(.seconds(20), "the shutdown to end once the client hung up") {
                        await fixture.server.shutdown(drainTimeout: .seconds(60), hangUpGrace: .seconds(60))
                    }
                }
                try await fixture.server.closeFuture.get()
                fixture.releaseHeld.signal()
                #expect(try await client.nextResponse().1.error == nil)
                await client.close()
                try await group.waitForAll()
            }
            #expect(fixture.server.connectionCount == 0)
            #expect(try await SocketFiles.sockets(namedBy: fixture.socketPath) == 0)
        }
    }

    @Test func aServerThatNeverRanClosesAtOnceAndRemovesItsSocket() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("idle.sock")
        let server = try await RPCServer.bind(unixSocketPath: path, registry: RPCServiceRegistry(), logger: LogCapture().logger())
        #expect(try await SocketFiles.sockets(namedBy: path) == 1)
        try await withTimeout(.seconds(10), "close") { await server.close() }
        // run() after a close returns at once.
        try await withTimeout(.seconds(10), "run after close") { await server.run() }
        #expect(try await SocketFiles.sockets(namedBy: path) == 0)
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
