public import NIOCore

/// The ttrpc `Request` message carried by every request frame.
///
/// Encoded by hand (see ProtobufWire.swift) so the payload is never copied;
/// equivalent to `Ttrpc_Request` field for field, which the tests check.
public struct RequestEnvelope: Hashable, Sendable {
    public var service: String
    public var method: String
    public var payload: ByteBuffer
    /// Time remaining in nanoseconds; 0 = no deadline.
    public var timeoutNanos: Int64
    public var metadata: Metadata

    public init(service: String, method: String, payload: ByteBuffer, timeoutNanos: Int64 = 0, metadata: Metadata = []) {
        self.service = service
        self.method = method
        self.payload = payload
        self.timeoutNanos = timeoutNanos
        self.metadata = metadata
    }

    /// Size of the encoded envelope without the payload bytes.
    @usableFromInline
    var prefixSize: Int {
        var size = ByteBuffer.stringFieldSize(1, service) + ByteBuffer.stringFieldSize(2, method)
        if timeoutNanos != 0 {
            size += ByteBuffer.tagSize(field: 4) + ByteBuffer.varintSize(UInt64(bitPattern: timeoutNanos))
        }
        size += ByteBuffer.metadataFieldsSize(metadata, field: 5)
        size += ByteBuffer.payloadPrefixSize(field: 3, length: payload.readableBytes)
        return size
    }

    /// Encoded size of the whole envelope.
    public var encodedSize: Int { prefixSize + payload.readableBytes }


    /// Writes every field but the payload's bytes, ending with the payload
    /// field's tag and length; the caller writes (or sends) the payload next.
    @usableFromInline
    func writePrefix(into buffer: inout ByteBuffer) {
        buffer.writeStringField(1, service)
        buffer.writeStringField(2, method)
        if timeoutNanos != 0 {
            buffer.writeTag(field: 4, wireType: .varint)
            buffer.writeVarint(UInt64(bitPattern: timeoutNanos))
        }
        buffer.writeMetadataFields(metadata, field: 5)
        buffer.writePayloadPrefix(field: 3, length: payload.readableBytes)
    }

    /// Writes the whole envelope.
    public func encode(into buffer: inout ByteBuffer) {
        writePrefix(into: &buffer)
        var payload = payload
        buffer.writeBuffer(&payload)
    }

    /// Decodes a `Request` message; the payload is a slice of `buffer`.
    public init(decoding buffer: ByteBuffer) throws(MalformedMessageError) {
        var buffer = buffer
        self.init(service: "", method: "", payload: ByteBuffer())
        while buffer.readableBytes > 0 {
            let (field, wireType) = try buffer.readTag()
            switch field {
            case 1:
                try ByteBuffer.expect(.lengthDelimited, wireType, field: "service")
                service = try buffer.readStringField()
            case 2:
                try ByteBuffer.expect(.lengthDelimited, wireType, field: "method")
                method = try buffer.readStringField()
            case 3:
                try ByteBuffer.expect(.lengthDelimited, wireType, field: "payload")
                payload = try buffer.readLengthDelimited()
            case 4:
                try ByteBuffer.expect(.varint, wireType, field: "timeout_nano")
                guard let value = buffer.readVarint() else { throw MalformedMessageError("truncated timeout_nano") }
                timeoutNanos = Int64(bitPattern: value)
            case 5:
                try ByteBuffer.expect(.lengthDelimited, wireType, field: "metadata")
                var entry = try buffer.readLengthDelimited()
                metadata.append(try entry.readKeyValue())
            default:
                try buffer.skipField(wireType)
            }
        }
    }
}
