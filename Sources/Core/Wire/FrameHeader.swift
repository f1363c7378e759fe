public import NIOCore

/// The kind of a ttrpc frame, from the header's type byte.
///
/// Unknown types are kept (not rejected) so that a peer speaking a newer
/// protocol can be ignored frame by frame, as ttrpc requires.
public struct FrameType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let request = FrameType(rawValue: 1)
    public static let response = FrameType(rawValue: 2)
    /// Streaming data (ttrpc 1.2); this implementation ignores it.
    public static let data = FrameType(rawValue: 3)

    public var description: String {
        switch self {
        case .request: "request"
        case .response: "response"
        case .data: "data"
        default: "type \(rawValue)"
        }
    }
}

/// The 10-byte ttrpc frame header, big-endian:
/// `uint32 length | uint32 stream_id | uint8 type | uint8 flags`.
public struct FrameHeader: Hashable, Sendable {
    /// Size of the header on the wire.
    public static let size = 10
    /// Largest data length a frame may carry (4 MiB), as in containerd/ttrpc.
    public static let maxDataLength = 4 << 20

    /// Length of the data that follows the header (not counting the header).
    public var dataLength: UInt32
    public var streamID: UInt32
    public var type: FrameType
    /// 0 for unary calls.
    public var flags: UInt8

    public init(dataLength: UInt32, streamID: UInt32, type: FrameType, flags: UInt8 = 0) {
        self.dataLength = dataLength
        self.streamID = streamID
        self.type = type
        self.flags = flags
    }
}

extension ByteBuffer {
    /// Writes a frame header.
    @inlinable
    @discardableResult
    public mutating func writeFrameHeader(_ header: FrameHeader) -> Int {
        self.writeMultipleIntegers(
            header.dataLength,
            header.streamID,
            header.type.rawValue,
            header.flags,
            endianness: .big
        )
    }

    /// Reads a frame header at the reader index without moving it, or nil if
    /// fewer than ``FrameHeader/size`` bytes are readable.
    @inlinable
    public func peekFrameHeader() -> FrameHeader? {
        guard
            let (length, stream, type, flags) = self.peekMultipleIntegers(
                endianness: .big,
                as: (UInt32, UInt32, UInt8, UInt8).self
            )
        else { return nil }
        return FrameHeader(dataLength: length, streamID: stream, type: FrameType(rawValue: type), flags: flags)
    }
}

/// A complete ttrpc frame: its header fields and its data.
public struct Frame: Hashable, Sendable {
    public var streamID: UInt32
    public var type: FrameType
    public var flags: UInt8
    public var data: ByteBuffer

    public init(streamID: UInt32, type: FrameType, flags: UInt8 = 0, data: ByteBuffer) {
        self.streamID = streamID
        self.type = type
        self.flags = flags
        self.data = data
    }
}
