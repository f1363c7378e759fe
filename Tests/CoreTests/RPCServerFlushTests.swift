import Core
import Echo
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

/// When the server flushes its answers: once at the end of a read for the
/// requests that read brought and that were answered during it; at once for
/// an answer given at any other time. Driven on an `EmbeddedChannel`, whose
/// outbound side holds writes until they are flushed.
@Suite("RPC server flushes")
struct RPCServerFlushTests {
    /// Counts the writes and flushes that reach the socket end of the pipeline.
    final class FlushCounter: ChannelOutboundHandler, @unchecked Sendable {
        typealias OutboundIn = ByteBuffer
        var writes = 0
        var flushes = 0
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            writes += 1
            context.write(data, promise: promise)
        }
        func flush(context: ChannelHandlerContext) {
            flushes += 1
            context.flush()
        }
    }

    /// A connected channel serving Echo, and a `Later` method that answers
    /// when the test says so.
    struct Connection {
        let channel: EmbeddedChannel
        let counter: FlushCounter
        let release: NIOLockedValueBox<[CheckedContinuation<Void, Never>]>

        init() throws {
            channel = EmbeddedChannel()
            counter = FlushCounter()
            let release = NIOLockedValueBox<[CheckedContinuation<Void, Never>]>([])
            self.release = release
            var registry = RPCServiceRegistry()
            EchoService.register(into: &registry)
            registry.register(service: "test.Later", method: "Later") { payload, _ in
                await withCheckedContinuation { continuation in release.withLockedValue { $0.append(continuation) } }
                return RPCResponse(payload: payload)
            }
            try channel.pipeline.syncOperations.addHandler(counter)
            try RPCServer.serve(connection: channel, registry: registry, logger: Logger(label: "flush-test"))
            try channel.connect(to: SocketAddress(unixDomainSocketPath: "/flush-test")).wait()
        }

        static func echoFrame(_ streamID: UInt32, _ bytes: [UInt8]) throws -> ByteBuffer {
            var request = EchoService.Request()
            request.payload = .init(bytes)
            let envelope = RequestEnvelope(service: EchoService.serviceName, method: "Echo", payload: try request.serializedBuffer())
            return try FrameEncoding.request(envelope, streamID: streamID, allocator: ByteBufferAllocator()).contiguous
        }

        static func laterFrame(_ streamID: UInt32) throws -> ByteBuffer {
            let envelope = RequestEnvelope(service: "test.Later", method: "Later", payload: ByteBuffer(bytes: [9]))
            return try FrameEncoding.request(envelope, streamID: streamID, allocator: ByteBufferAllocator()).contiguous
        }

        /// Every answer flushed so far, as (stream, response).
        func flushedAnswers() throws -> [(UInt32, ResponseEnvelope)] {
            var bytes = ByteBuffer()
            while var part = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&part) }
            var decoder = FrameDecoder()
            var answers: [(UInt32, ResponseEnvelope)] = []
            while case .frame(let frame) = try decoder.decode(buffer: &bytes) {
                answers.append((frame.streamID, try ResponseEnvelope(decoding: frame.data)))
            }
            #expect(bytes.readableBytes == 0, "no partial answer is flushed")
            return answers
        }

        /// Lets the `Later` handlers answer, and runs what they scheduled.
        func releaseLater() {
            for continuation in release.withLockedValue({ pending in defer { pending = [] }; return pending }) {
                continuation.resume()
            }
            channel.embeddedEventLoop.run()
        }
    }

    @Test func severalAnswersInOneReadAreAllDeliveredInOneWriteAndFlush() throws {
        let connection = try Connection()
        var read = ByteBuffer()
        for streamID: UInt32 in [1, 3, 5] {
            var frame = try Connection.echoFrame(streamID, [UInt8(streamID)])
            read.writeBuffer(&frame)
        }
        try connection.channel.writeInbound(read)
        connection.channel.embeddedEventLoop.run()

        let answers = try connection.flushedAnswers()
        #expect(answers.map(\.0) == [1, 3, 5])
        for (streamID, response) in answers {
            #expect(response.error == nil)
            #expect(Array(try EchoService.Response(buffer: response.payload).payload) == [UInt8(streamID)])
        }
        #expect(connection.counter.writes == 1, "the answers go as one buffer")
        #expect(connection.counter.flushes == 1)
    }

    @Test func aLargeAnswerAmongSmallOnesKeepsItsPlace() throws {
        // A payload too large to copy goes as a buffer of its own, between
        // the answers before and after it.
        let connection = try Connection()
        let large = (0..<40_000).map { UInt8(truncatingIfNeeded: $0) }
        var read = try Connection.echoFrame(1, [1])
        var big = try Connection.echoFrame(3, large)
        var last = try Connection.echoFrame(5, [5])
        read.writeBuffer(&big)
        read.writeBuffer(&last)
        try connection.channel.writeInbound(read)
        connection.channel.embeddedEventLoop.run()

        let answers = try connection.flushedAnswers()
        #expect(answers.map(\.0) == [1, 3, 5])
        let payloads = try answers.map { Array(try EchoService.Response(buffer: $0.1.payload).payload) }
        #expect(payloads == [[1], large, [5]])
        #expect(connection.counter.flushes == 1)
    }

    @Test func aSingleRequestIsAnsweredWithoutWaitingForAnother() throws {
        let connection = try Connection()
        try connection.channel.writeInbound(try Connection.echoFrame(1, [42]))
        connection.channel.embeddedEventLoop.run()
        let answers = try connection.flushedAnswers()
        #expect(answers.map(\.0) == [1])
        #expect(connection.counter.flushes == 1)
    }

    @Test func anAnswerGivenAfterTheReadIsFlushedAtOnce() throws {
        let connection = try Connection()
        // One read: a call that waits and one answered at once.
        var read = try Connection.laterFrame(1)
        var echo = try Connection.echoFrame(3, [7])
        read.writeBuffer(&echo)
        try connection.channel.writeInbound(read)
        connection.channel.embeddedEventLoop.run()
        #expect(try connection.flushedAnswers().map(\.0) == [3])
        #expect(connection.counter.flushes == 1)

        // No read now: the late answer goes out by itself.
        connection.releaseLater()
        let late = try connection.flushedAnswers()
        #expect(late.map(\.0) == [1])
        #expect(late.first?.1.error == nil)
        #expect(connection.counter.flushes == 2)
    }
}
