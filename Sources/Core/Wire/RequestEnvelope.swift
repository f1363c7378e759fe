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
        for entry in metadata {
            size += ByteBuffer.lengthDelimitedFieldSize(field: 5, length: Self.keyValueSize(entry))
        }
        if payload.readableBytes > 0 {
            size += ByteBuffer.tagSize(field: 3) + ByteBuffer.varintSize(UInt64(payload.readableBytes))
        }
        return size
    }

    /// Encoded size of the whole envelope.
    public var encodedSize: Int { prefixSize + payload.readableBytes }

    static func keyValueSize(_ entry: Metadata.Entry) -> Int {
        ByteBuffer.stringFieldSize(1, entry.key) + ByteBuffer.stringFieldSize(2, entry.value)
    }

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
        for entry in metadata {
            buffer.writeTag(field: 5, wireType: .lengthDelimited)
            buffer.writeVarint(UInt64(Self.keyValueSize(entry)))
            buffer.writeStringField(1, entry.key)
            buffer.writeStringField(2, entry.value)
        }
        if payload.readableBytes > 0 {
            buffer.writeTag(field: 3, wireType: .lengthDelimited)
            buffer.writeVarint(UInt64(payload.readableBytes))
        }
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
                metadata.append(try Self.decodeKeyValue(&entry))
            default:
                try buffer.skipField(wireType)
            }
        }
    }

    static func decodeKeyValue(_ buffer: inout ByteBuffer) throws(MalformedMessageError) -> Metadata.Entry {
        var entry = Metadata.Entry(key: "", value: "")
        while buffer.readableBytes > 0 {
            let (field, wireType) = try buffer.readTag()
            switch field {
            case 1:
                try ByteBuffer.expect(.lengthDelimited, wireType, field: "metadata.key")
                entry.key = try buffer.readStringField()
            case 2:
                try ByteBuffer.expect(.lengthDelimited, wireType, field: "metadata.value")
                entry.value = try buffer.readStringField()
            default:
                try buffer.skipField(wireType)
            }
        }
        return entry
    }
}
