public import NIOCore
internal import SwiftProtobuf

/// The ttrpc `Response` message carried by every response frame: a status
/// (unset on success) and the payload, plus the instancepoller extension
/// field 3, response metadata, which standard ttrpc peers skip.
public struct ResponseEnvelope: Hashable, Sendable {
    /// nil on success.
    public var error: RPCError?
    public var payload: ByteBuffer
    public var metadata: Metadata

    public init(payload: ByteBuffer, metadata: Metadata = []) {
        self.error = nil
        self.payload = payload
        self.metadata = metadata
    }

    public init(error: RPCError) {
        self.error = error
        self.payload = ByteBuffer()
        self.metadata = error.metadata
    }

    private func encodedStatus() -> [UInt8]? {
        guard let error else { return nil }
        var status = Google_Rpc_Status()
        status.code = error.code.rawValue
        status.message = error.message
        status.details = error.details
        // Status holds only strings, ints and Any: encoding cannot fail.
        return try? status.serializedBytes()
    }

    @usableFromInline
    func writePrefix(into buffer: inout ByteBuffer) {
        if let status = encodedStatus() {
            buffer.writeTag(field: 1, wireType: .lengthDelimited)
            buffer.writeVarint(UInt64(status.count))
            buffer.writeBytes(status)
        }
        buffer.writeMetadataFields(metadata, field: 3)
        buffer.writePayloadPrefix(field: 2, length: payload.readableBytes)
    }

    @usableFromInline
    var prefixSize: Int {
        var size = 0
        if let status = encodedStatus() {
            size += ByteBuffer.lengthDelimitedFieldSize(field: 1, length: status.count)
        }
        size += ByteBuffer.metadataFieldsSize(metadata, field: 3)
        size += ByteBuffer.payloadPrefixSize(field: 2, length: payload.readableBytes)
        return size
    }

    public var encodedSize: Int { prefixSize + payload.readableBytes }

    public func encode(into buffer: inout ByteBuffer) {
        writePrefix(into: &buffer)
        var payload = payload
        buffer.writeBuffer(&payload)
    }

    /// Decodes a `Response` message; the payload is a slice of `buffer`.
    public init(decoding buffer: ByteBuffer) throws(MalformedMessageError) {
        var buffer = buffer
        var status: Google_Rpc_Status?
        self.init(payload: ByteBuffer())
        while buffer.readableBytes > 0 {
            let (field, wireType) = try buffer.readTag()
            switch field {
            case 1:
                try ByteBuffer.expect(.lengthDelimited, wireType, field: "status")
                let slice = try buffer.readLengthDelimited()
                do {
                    status = try Google_Rpc_Status(serializedBytes: ByteBufferBytes(slice))
                } catch {
                    throw MalformedMessageError("undecodable status: \(error)")
                }
            case 2:
                try ByteBuffer.expect(.lengthDelimited, wireType, field: "payload")
                payload = try buffer.readLengthDelimited()
            case 3:
                try ByteBuffer.expect(.lengthDelimited, wireType, field: "metadata")
                var entry = try buffer.readLengthDelimited()
                metadata.append(try entry.readKeyValue())
            default:
                try buffer.skipField(wireType)
            }
        }
        if let status, status.code != 0 {
            error = RPCError(
                RPCStatusCode(rawValue: status.code),
                status.message,
                metadata: metadata,
                details: status.details
            )
        }
    }
}
