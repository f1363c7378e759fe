public import NIOCore

/// What the frame decoder yields: a whole frame, or notice that a frame's data
/// exceeded the 4 MiB limit and was discarded.
public enum FrameDecoderOutput: Hashable, Sendable {
    case frame(Frame)
    /// The header announced `length` bytes of data, more than
    /// ``FrameHeader/maxDataLength``. The data was skipped without being
    /// buffered; the stream can be answered with ResourceExhausted and the
    /// connection stays usable.
    case oversized(streamID: UInt32, type: FrameType, length: UInt32)
}

/// The input ended in the middle of a frame.
public struct TruncatedFrameError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Bytes of the unfinished frame that had arrived.
    public var receivedBytes: Int
    public init(receivedBytes: Int) { self.receivedBytes = receivedBytes }
    public var description: String {
        "connection closed in the middle of a frame (\(receivedBytes) bytes of it received)"
    }
}

/// Told after each decoding step what the decoder holds, so that a server
/// can bound the time and memory an unfinished frame takes.
public protocol FrameDecoderObserver: AnyObject {
    /// - Parameters:
    ///   - buffered: bytes of an unfinished frame held in memory (0 while
    ///     an oversize frame's data is being skipped).
    ///   - unfinished: whether the bytes held begin a frame that needs more
    ///     bytes to end (or an oversize frame is being skipped); false when
    ///     they hold whole frames still to be decoded, the next steps' work.
    ///   - completedFrame: whether this step yielded a frame.
    /// - Throws: to refuse the bytes: the decoder's error, which closes
    ///   the connection.
    func frameDecoderStep(buffered: Int, unfinished: Bool, completedFrame: Bool) throws
}

/// Splits a byte stream into ttrpc frames.
///
/// Leaves the reader index alone until a whole frame is readable, and rejects
/// an oversize length from the header before buffering any of its data: the
/// data is skipped as it arrives, so a 4 GiB claim costs no memory.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = FrameDecoderOutput

    private enum State {
        case header
        case discarding(FrameHeader, remaining: Int)
    }

    private var state = State.header
    public let maxDataLength: Int
    /// Told after every step; see ``FrameDecoderObserver``.
    public let observer: (any FrameDecoderObserver)?

    public init(maxDataLength: Int = FrameHeader.maxDataLength, observer: (any FrameDecoderObserver)? = nil) {
        self.maxDataLength = maxDataLength
        self.observer = observer
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> FrameDecoderOutput? {
        let output = self.step(buffer: &buffer)
        if let observer {
            try observer.frameDecoderStep(
                buffered: buffer.readableBytes, unfinished: self.waitsForMore(buffer), completedFrame: output != nil
            )
        }
        return output
    }

    /// Whether `buffer` begins a frame that cannot be decoded until more
    /// bytes arrive. Several requests read at once are not "unfinished"
    /// between the steps that decode them one by one.
    private func waitsForMore(_ buffer: ByteBuffer) -> Bool {
        if case .discarding = self.state { return true }
        guard buffer.readableBytes > 0 else { return false }
        guard let header = buffer.peekFrameHeader() else { return true }
        let length = Int(header.dataLength)
        return length <= self.maxDataLength && buffer.readableBytes < FrameHeader.size + length
    }

    private mutating func step(buffer: inout ByteBuffer) -> FrameDecoderOutput? {
        switch self.state {
        case .header:
            guard let header = buffer.peekFrameHeader() else { return nil }
            let length = Int(header.dataLength)
            if length > self.maxDataLength {
                buffer.moveReaderIndex(forwardBy: FrameHeader.size)
                self.state = .discarding(header, remaining: length)
                return self.discard(from: &buffer)
            }
            guard buffer.readableBytes >= FrameHeader.size + length else { return nil }
            buffer.moveReaderIndex(forwardBy: FrameHeader.size)
            let data = buffer.readSlice(length: length)!
            return .frame(Frame(streamID: header.streamID, type: header.type, flags: header.flags, data: data))

        case .discarding:
            return self.discard(from: &buffer)
        }
    }

    private mutating func discard(from buffer: inout ByteBuffer) -> FrameDecoderOutput? {
        guard case .discarding(let header, let remaining) = self.state else { return nil }
        let skip = min(remaining, buffer.readableBytes)
        buffer.moveReaderIndex(forwardBy: skip)
        if skip < remaining {
            self.state = .discarding(header, remaining: remaining - skip)
            return nil
        }
        self.state = .header
        return .oversized(streamID: header.streamID, type: header.type, length: header.dataLength)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> FrameDecoderOutput? {
        if let output = try self.decode(buffer: &buffer) {
            return output
        }
        if seenEOF {
            switch self.state {
            case .header where buffer.readableBytes > 0:
                throw TruncatedFrameError(receivedBytes: buffer.readableBytes)
            case .discarding(let header, let remaining):
                throw TruncatedFrameError(receivedBytes: FrameHeader.size + Int(header.dataLength) - remaining)
            case .header:
                break
            }
        }
        return nil
    }
}
