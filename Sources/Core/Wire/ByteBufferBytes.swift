public import NIOCore
public import SwiftProtobuf

/// A `ByteBuffer` as SwiftProtobuf's bag of bytes, so messages decode from a
/// frame's slice and encode straight into a buffer the channel can send,
/// without an intermediate `Data` or `[UInt8]`.
public struct ByteBufferBytes: SwiftProtobufContiguousBytes, Sendable {
    public var buffer: ByteBuffer

    public init(_ buffer: ByteBuffer) { self.buffer = buffer }

    public init(repeating: UInt8, count: Int) {
        self.buffer = ByteBufferAllocator().buffer(capacity: count)
        self.buffer.writeRepeatingByte(repeating, count: count)
    }

    public init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
        self.buffer = ByteBufferAllocator().buffer(bytes: sequence)
    }

    public var count: Int { buffer.readableBytes }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes(body)
    }

    public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeMutableReadableBytes(body)
    }
}

extension SwiftProtobuf.Message {
    /// Decodes the message from a buffer's readable bytes.
    public init(buffer: ByteBuffer) throws {
        try self.init(serializedBytes: ByteBufferBytes(buffer))
    }

    /// Encodes the message into a new buffer.
    public func serializedBuffer() throws -> ByteBuffer {
        let bytes: ByteBufferBytes = try self.serializedBytes()
        return bytes.buffer
    }
}
