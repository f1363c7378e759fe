import Core
import Support
import NIOCore
import NIOTestUtils
import Testing

@Suite("Frame decoder")
struct FrameDecoderTests {
    static func frameBytes(_ streamID: UInt32, _ type: FrameType, _ data: [UInt8], flags: UInt8 = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeFrameHeader(FrameHeader(dataLength: UInt32(data.count), streamID: streamID, type: type, flags: flags))
        buffer.writeBytes(data)
        return buffer
    }

    static func frame(_ streamID: UInt32, _ type: FrameType, _ data: [UInt8], flags: UInt8 = 0) -> FrameDecoderOutput {
        .frame(Frame(streamID: streamID, type: type, flags: flags, data: ByteBuffer(bytes: data)))
    }

    /// Feeds `chunks` one after another and returns every output.
    static func decode(_ chunks: [ByteBuffer], seenEOF: Bool = false) throws -> [FrameDecoderOutput] {
        let processor = NIOSingleStepByteToMessageProcessor(FrameDecoder())
        var outputs: [FrameDecoderOutput] = []
        for chunk in chunks {
            try processor.process(buffer: chunk) { outputs.append($0) }
        }
        if seenEOF {
            try processor.finishProcessing(seenEOF: true) { outputs.append($0) }
        }
        return outputs
    }

    @Test func headerIsBigEndianTenBytes() {
        var buffer = ByteBuffer()
        buffer.writeFrameHeader(FrameHeader(dataLength: 0x0102_0304, streamID: 0x0506_0708, type: .response, flags: 9))
        #expect(Array(buffer.readableBytesView) == [1, 2, 3, 4, 5, 6, 7, 8, 2, 9])
        #expect(buffer.peekFrameHeader() == FrameHeader(dataLength: 0x0102_0304, streamID: 0x0506_0708, type: .response, flags: 9))
    }

    @Test func verifierAcceptsFramesFedEveryWay() throws {
        // NIO's verifier feeds each input whole, byte by byte and in random
        // splits, and checks the decoder leaves nothing behind.
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: [
                (Self.frameBytes(1, .request, [1, 2, 3]), [Self.frame(1, .request, [1, 2, 3])]),
                (Self.frameBytes(3, .response, []), [Self.frame(3, .response, [])]),
                (Self.frameBytes(5, FrameType(rawValue: 77), [9], flags: 4), [Self.frame(5, FrameType(rawValue: 77), [9], flags: 4)]),
            ],
            decoderFactory: { FrameDecoder() }
        )
    }

    @Test func byteByByte() throws {
        var all = Self.frameBytes(1, .request, Array(0..<40))
        var more = Self.frameBytes(3, .request, [7])
        all.writeBuffer(&more)
        let chunks = all.readableBytesView.map { ByteBuffer(bytes: [$0]) }
        #expect(try Self.decode(chunks) == [Self.frame(1, .request, Array(0..<40)), Self.frame(3, .request, [7])])
    }

    @Test func splitAtEveryBoundary() throws {
        var bytes = Self.frameBytes(1, .request, Array(0..<25))
        var second = Self.frameBytes(3, .response, [42, 43])
        bytes.writeBuffer(&second)
        let expected = [Self.frame(1, .request, Array(0..<25)), Self.frame(3, .response, [42, 43])]
        for split in 0...bytes.readableBytes {
            let head = bytes.getSlice(at: 0, length: split)!
            let tail = bytes.getSlice(at: split, length: bytes.readableBytes - split)!
            #expect(try Self.decode([head, tail]) == expected, "split at byte \(split)")
        }
    }

    @Test func severalFramesInOneRead() throws {
        var bytes = ByteBuffer()
        for id in stride(from: UInt32(1), through: 19, by: 2) {
            var frame = Self.frameBytes(id, .request, [UInt8(id)])
            bytes.writeBuffer(&frame)
        }
        let outputs = try Self.decode([bytes])
        #expect(outputs == stride(from: UInt32(1), through: 19, by: 2).map { Self.frame($0, .request, [UInt8($0)]) })
    }

    @Test func exactlyFourMiBIsAccepted() throws {
        let data = [UInt8](repeating: 0xAB, count: FrameHeader.maxDataLength)
        let outputs = try Self.decode([Self.frameBytes(1, .request, data)])
        #expect(outputs == [Self.frame(1, .request, data)])
    }

    @Test func oversizeIsSkippedWithoutBufferingAndTheStreamGoesOn() throws {
        let length = FrameHeader.maxDataLength + 1
        let processor = NIOSingleStepByteToMessageProcessor(FrameDecoder())
        var outputs: [FrameDecoderOutput] = []
        var header = ByteBuffer()
        header.writeFrameHeader(FrameHeader(dataLength: UInt32(length), streamID: 7, type: .request))
        try processor.process(buffer: header) { outputs.append($0) }
        // Feed the oversize data in 64 KiB reads; none of it may pile up.
        var remaining = length
        let chunk = ByteBuffer(repeating: 0xEE, count: 64 * 1024)
        while remaining > 0 {
            let n = min(remaining, chunk.readableBytes)
            try processor.process(buffer: chunk.getSlice(at: 0, length: n)!) { outputs.append($0) }
            remaining -= n
            #expect(processor.unprocessedBytes == 0)
        }
        try processor.process(buffer: Self.frameBytes(9, .request, [1])) { outputs.append($0) }
        #expect(outputs == [.oversized(streamID: 7, type: .request, length: UInt32(length)), Self.frame(9, .request, [1])])
    }

    @Test func hugeLengthClaimCostsNothing() throws {
        var header = ByteBuffer()
        header.writeFrameHeader(FrameHeader(dataLength: .max, streamID: 1, type: .request))
        #expect(try Self.decode([header, ByteBuffer(repeating: 0, count: 1000)]).isEmpty)
    }

    @Test func truncatedFrameAtEOFIsAnError() {
        let bytes = Self.frameBytes(1, .request, Array(0..<10))
        let truncated = bytes.getSlice(at: 0, length: 14)!
        #expect(throws: TruncatedFrameError(receivedBytes: 14)) {
            try Self.decode([truncated], seenEOF: true)
        }
        let headerOnly = bytes.getSlice(at: 0, length: 6)!
        #expect(throws: TruncatedFrameError(receivedBytes: 6)) {
            try Self.decode([headerOnly], seenEOF: true)
        }
    }

    @Test func cleanEOFBetweenFramesIsFine() throws {
        #expect(try Self.decode([Self.frameBytes(1, .request, [1])], seenEOF: true) == [Self.frame(1, .request, [1])])
    }

    /// Records each step the decoder reports.
    final class StepLog: FrameDecoderObserver {
        struct Step: Equatable {
            var buffered: Int
            var unfinished: Bool
            var completedFrame: Bool
        }
        var steps: [Step] = []
        func frameDecoderStep(buffered: Int, unfinished: Bool, completedFrame: Bool) throws {
            steps.append(Step(buffered: buffered, unfinished: unfinished, completedFrame: completedFrame))
        }
    }

    @Test func wholeFramesWaitingInTheBufferAreNotUnfinished() throws {
        // Two whole frames and the start of a third in one read: only the
        // third is unfinished (the server's frame clock runs for it alone,
        // not between the frames of one read).
        var bytes = Self.frameBytes(1, .request, [1, 2])
        var second = Self.frameBytes(3, .request, [3])
        var third = Self.frameBytes(5, .request, [4, 5, 6])
        bytes.writeBuffer(&second)
        var start = third.readSlice(length: 12)!
        bytes.writeBuffer(&start)
        let log = StepLog()
        let processor = NIOSingleStepByteToMessageProcessor(FrameDecoder(observer: log))
        var frames = 0
        try processor.process(buffer: bytes) { _ in frames += 1 }
        #expect(frames == 2)
        #expect(log.steps == [
            .init(buffered: 11 + 12, unfinished: false, completedFrame: true),
            .init(buffered: 12, unfinished: true, completedFrame: true),
            .init(buffered: 12, unfinished: true, completedFrame: false),
        ])

        // The rest of the third frame ends it.
        log.steps = []
        try processor.process(buffer: third) { _ in frames += 1 }
        #expect(frames == 3)
        #expect(log.steps.first == .init(buffered: 0, unfinished: false, completedFrame: true))
        #expect(log.steps.allSatisfy { !$0.unfinished })
    }

    @Test func anOversizeFrameBeingSkippedIsUnfinished() throws {
        var header = ByteBuffer()
        header.writeFrameHeader(FrameHeader(dataLength: UInt32(FrameHeader.maxDataLength + 1), streamID: 1, type: .request))
        header.writeBytes([0, 0, 0])
        let log = StepLog()
        let processor = NIOSingleStepByteToMessageProcessor(FrameDecoder(observer: log))
        try processor.process(buffer: header) { _ in Issue.record("no output before the oversize data is skipped") }
        #expect(log.steps.last == .init(buffered: 0, unfinished: true, completedFrame: false))
    }
}
