import Core
import NIOCore
import Testing
import TestSupport

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
