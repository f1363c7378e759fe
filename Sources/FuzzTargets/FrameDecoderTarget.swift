internal import Core
internal import NIOCore
internal import NIOEmbedded

/// The frame decoder against a reference reading of the same bytes.
///
/// The first input byte picks how the rest is cut into reads (the decoder
/// must not care), and the frame limit is small so that oversized frames,
/// whose data is skipped as it arrives, are reachable with short inputs.
enum FrameDecoderTarget {
    static let maxDataLength = 64

    enum Output: Equatable {
        case frame(streamID: UInt32, type: UInt8, flags: UInt8, data: [UInt8])
        case oversized(streamID: UInt32, type: UInt8, length: UInt32)
    }

    static func run(_ input: [UInt8]) throws(FuzzPropertyViolation) {
        guard let cut = input.first else { return }
        let stream = Array(input.dropFirst())
        let (expected, leftover) = reference(stream, maxDataLength: maxDataLength)

        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxDataLength: maxDataLength)))
        var decoded: [Output] = []
        var endError: (any Error)?
        do {
            for chunk in chunks(of: stream, pattern: cut) {
                try channel.writeInbound(channel.allocator.buffer(bytes: chunk))
                try drain(channel, into: &decoded)
            }
        } catch {
            throw FuzzPropertyViolation(.frameDecoder, "a complete read failed: \(error)")
        }
        do {
            _ = try channel.finish()
        } catch {
            endError = error
        }
        do {
            try drain(channel, into: &decoded)
        } catch {
            throw FuzzPropertyViolation(.frameDecoder, "reading the decoded frames failed: \(error)")
        }

        guard decoded == expected else {
            throw FuzzPropertyViolation(.frameDecoder, "decoded \(decoded.count) outputs, the reference reads \(expected.count): \(decoded) vs \(expected)")
        }
        switch (endError, leftover) {
        case (nil, 0):
            break
        case (let error as TruncatedFrameError, let left) where left > 0:
            guard error.receivedBytes == left else {
                throw FuzzPropertyViolation(.frameDecoder, "a truncated frame of \(left) bytes was reported as \(error.receivedBytes)")
            }
        case (nil, let left):
            throw FuzzPropertyViolation(.frameDecoder, "\(left) bytes of an unfinished frame at the end went unreported")
        case (let error?, _):
            throw FuzzPropertyViolation(.frameDecoder, "the end of input raised \(error), and no frame was unfinished")
        }
    }

    private static func drain(_ channel: EmbeddedChannel, into decoded: inout [Output]) throws {
        while let output = try channel.readInbound(as: FrameDecoderOutput.self) {
            switch output {
            case .frame(let frame):
                decoded.append(.frame(streamID: frame.streamID, type: frame.type.rawValue, flags: frame.flags, data: Array(frame.data.readableBytesView)))
            case .oversized(let streamID, let type, let length):
                decoded.append(.oversized(streamID: streamID, type: type.rawValue, length: length))
            }
        }
    }

    /// Cuts `bytes` into reads of 1 to 16 bytes following `pattern`'s bits,
    /// or, for an even pattern, into one read.
    private static func chunks(of bytes: [UInt8], pattern: UInt8) -> [ArraySlice<UInt8>] {
        guard pattern & 1 == 1 else { return [bytes[...]] }
        var result: [ArraySlice<UInt8>] = []
        var start = 0
        var step = 0
        while start < bytes.count {
            let size = 1 + Int((pattern >> UInt8(step % 8)) & 0x0F)
            let end = min(bytes.count, start + size)
            result.append(bytes[start..<end])
            start = end
            step += 1
        }
        return result
    }

    /// The wire format read directly: 10-byte big-endian header, then data;
    /// data over the limit is skipped. Returns what remains unfinished.
    static func reference(_ bytes: [UInt8], maxDataLength: Int) -> ([Output], leftover: Int) {
        var outputs: [Output] = []
        var at = 0
        func u32(_ i: Int) -> UInt32 {
            UInt32(bytes[i]) << 24 | UInt32(bytes[i + 1]) << 16 | UInt32(bytes[i + 2]) << 8 | UInt32(bytes[i + 3])
        }
        while bytes.count - at >= 10 {
            let length = u32(at)
            let streamID = u32(at + 4)
            let type = bytes[at + 8]
            let flags = bytes[at + 9]
            let end = at + 10 + Int(length)
            guard end <= bytes.count else { break }
            if length > maxDataLength {
                outputs.append(.oversized(streamID: streamID, type: type, length: length))
            } else {
                outputs.append(.frame(streamID: streamID, type: type, flags: flags, data: Array(bytes[(at + 10)..<end])))
            }
            at = end
        }
        return (outputs, bytes.count - at)
    }
}
