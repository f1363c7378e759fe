public import NIOCore

/// Builds the bytes of request and response frames.
///
/// A frame is returned as a head (header and envelope fields) and, for large
/// payloads, the payload as a second buffer, so the channel can send both
/// with one vectored write instead of copying the payload.
public enum FrameEncoding {
    /// Payloads up to this size are copied into the head: one small buffer
    /// is cheaper than a vectored write.
    static let inlinePayloadLimit = 16 * 1024

    public struct EncodedFrame: Sendable {
        public var head: ByteBuffer
        public var payload: ByteBuffer?

        /// Both parts as one buffer (for tests and simple writers).
        public var contiguous: ByteBuffer {
            var head = head
            if var payload { head.writeBuffer(&payload) }
            return head
        }
    }

    public static func request(
        _ envelope: RequestEnvelope,
        streamID: UInt32,
        allocator: ByteBufferAllocator
    ) throws(RPCError) -> EncodedFrame {
        try frame(
            streamID: streamID, type: .request, prefixSize: envelope.prefixSize, payload: envelope.payload,
            allocator: allocator, what: "request"
        ) { envelope.writePrefix(into: &$0) }
    }

    public static func response(
        _ envelope: ResponseEnvelope,
        streamID: UInt32,
        allocator: ByteBufferAllocator
    ) throws(RPCError) -> EncodedFrame {
        var head = ByteBuffer()
        let payload = try response(envelope, streamID: streamID, appendingTo: &head, allocator: allocator)
        return EncodedFrame(head: head, payload: payload)
    }

    /// Appends a response frame to `buffer` (after its readable bytes), so
    /// that several answers go to the socket as one buffer.
    ///
    /// - Returns: the payload when it is too large to copy: it must be
    ///   written right after `buffer`, as the rest of this frame.
    public static func response(
        _ envelope: ResponseEnvelope,
        streamID: UInt32,
        appendingTo buffer: inout ByteBuffer,
        allocator: ByteBufferAllocator
    ) throws(RPCError) -> ByteBuffer? {
        try frame(
            streamID: streamID, type: .response, prefixSize: envelope.prefixSize, payload: envelope.payload,
            appendingTo: &buffer, allocator: allocator, what: "response"
        ) { envelope.writePrefix(into: &$0) }
    }

    private static func frame(
        streamID: UInt32,
        type: FrameType,
        prefixSize: Int,
        payload: ByteBuffer,
        allocator: ByteBufferAllocator,
        what: String,
        writePrefix: (inout ByteBuffer) -> Void
    ) throws(RPCError) -> EncodedFrame {
        var head = ByteBuffer()
        let rest = try frame(
            streamID: streamID, type: type, prefixSize: prefixSize, payload: payload,
            appendingTo: &head, allocator: allocator, what: what, writePrefix: writePrefix
        )
        return EncodedFrame(head: head, payload: rest)
    }

    /// Appends header, envelope fields and (when small) the payload to
    /// `buffer`, which is allocated when it has no storage yet; returns the
    /// payload when it is large, to be sent as a buffer of its own.
    private static func frame(
        streamID: UInt32,
        type: FrameType,
        prefixSize: Int,
        payload: ByteBuffer,
        appendingTo buffer: inout ByteBuffer,
        allocator: ByteBufferAllocator,
        what: String,
        writePrefix: (inout ByteBuffer) -> Void
    ) throws(RPCError) -> ByteBuffer? {
        let dataLength = prefixSize + payload.readableBytes
        guard dataLength <= FrameHeader.maxDataLength else {
            throw RPCError(
                .resourceExhausted,
                "\(what) of \(dataLength) bytes exceeds the ttrpc frame limit of \(FrameHeader.maxDataLength) bytes"
            )
        }
        let inline = payload.readableBytes <= inlinePayloadLimit
        let size = FrameHeader.size + prefixSize + (inline ? payload.readableBytes : 0)
        if buffer.capacity == 0 {
            buffer = allocator.buffer(capacity: size)
        } else {
            buffer.reserveCapacity(minimumWritableBytes: size)
        }
        buffer.writeFrameHeader(FrameHeader(dataLength: UInt32(dataLength), streamID: streamID, type: type))
        writePrefix(&buffer)
        guard inline else { return payload }
        var payload = payload
        buffer.writeBuffer(&payload)
        return nil
    }
}
