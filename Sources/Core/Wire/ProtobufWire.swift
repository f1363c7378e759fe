public import NIOCore

/// Protobuf wire types (https://protobuf.dev/programming-guides/encoding/).
@usableFromInline
enum WireType: UInt8 {
    case varint = 0
    case fixed64 = 1
    case lengthDelimited = 2
    case startGroup = 3
    case endGroup = 4
    case fixed32 = 5
}

/// A protobuf message that could not be decoded.
public struct MalformedMessageError: Error, Hashable, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Hand-written protobuf encoding for the ttrpc envelope, which sits on every
/// call's hot path: the payload is sliced, not copied, on the way in, and
/// written after the other fields (protobuf allows any field order) so that a
/// large payload can go to the socket as its own buffer on the way out.
extension ByteBuffer {
    @inlinable
    static func varintSize(_ value: UInt64) -> Int {
        // Each byte carries 7 bits; 0 still takes one byte.
        let bits = 64 - value.leadingZeroBitCount
        return max(1, (bits + 6) / 7)
    }

    @inlinable
    @discardableResult
    mutating func writeVarint(_ value: UInt64) -> Int {
        var value = value
        var written = 0
        while value >= 0x80 {
            written += self.writeInteger(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        written += self.writeInteger(UInt8(value))
        return written
    }

    @inlinable
    mutating func writeTag(field: UInt32, wireType: WireType) {
        self.writeVarint(UInt64(field) << 3 | UInt64(wireType.rawValue))
    }

    @inlinable
    static func tagSize(field: UInt32) -> Int { varintSize(UInt64(field) << 3) }

    /// Size of a length-delimited field holding `length` bytes.
    @inlinable
    static func lengthDelimitedFieldSize(field: UInt32, length: Int) -> Int {
        tagSize(field: field) + varintSize(UInt64(length)) + length
    }

    @inlinable
    mutating func writeStringField(_ field: UInt32, _ value: String) {
        guard !value.isEmpty else { return }
        self.writeTag(field: field, wireType: .lengthDelimited)
        self.writeVarint(UInt64(value.utf8.count))
        self.writeString(value)
    }

    @inlinable
    static func stringFieldSize(_ field: UInt32, _ value: String) -> Int {
        value.isEmpty ? 0 : lengthDelimitedFieldSize(field: field, length: value.utf8.count)
    }

    /// Reads a varint; nil if it is truncated or longer than 10 bytes.
    @inlinable
    mutating func readVarint() -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        var index = self.readerIndex
        let end = self.writerIndex
        while index < end, shift < 64 {
            let byte = self.getInteger(at: index, as: UInt8.self)!
            index += 1
            result |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 {
                self.moveReaderIndex(to: index)
                return result
            }
            shift += 7
        }
        return nil
    }

    /// Reads one field tag: the field number and its wire type.
    @inlinable
    mutating func readTag() throws(MalformedMessageError) -> (field: UInt32, wireType: WireType) {
        guard let tag = self.readVarint() else { throw MalformedMessageError("truncated field tag") }
        guard let wireType = WireType(rawValue: UInt8(tag & 7)) else {
            throw MalformedMessageError("invalid wire type \(tag & 7)")
        }
        let field = tag >> 3
        guard field > 0, field <= UInt64(UInt32.max >> 3) else {
            throw MalformedMessageError("invalid field number \(field)")
        }
        return (UInt32(field), wireType)
    }

    /// Reads the body of a length-delimited field as a slice (no copy).
    @inlinable
    mutating func readLengthDelimited() throws(MalformedMessageError) -> ByteBuffer {
        guard let length = self.readVarint() else { throw MalformedMessageError("truncated length") }
        guard length <= UInt64(self.readableBytes), let slice = self.readSlice(length: Int(length)) else {
            throw MalformedMessageError("length \(length) runs past the end of the message")
        }
        return slice
    }

    @inlinable
    mutating func readStringField() throws(MalformedMessageError) -> String {
        var slice = try self.readLengthDelimited()
        return slice.readString(length: slice.readableBytes)!
    }

    /// Skips a field of an unknown number, as protobuf requires.
    @inlinable
    mutating func skipField(_ wireType: WireType) throws(MalformedMessageError) {
        switch wireType {
        case .varint:
            guard self.readVarint() != nil else { throw MalformedMessageError("truncated varint") }
        case .fixed64:
            guard self.readSlice(length: 8) != nil else { throw MalformedMessageError("truncated fixed64") }
        case .fixed32:
            guard self.readSlice(length: 4) != nil else { throw MalformedMessageError("truncated fixed32") }
        case .lengthDelimited:
            _ = try self.readLengthDelimited()
        case .startGroup, .endGroup:
            throw MalformedMessageError("groups are not supported")
        }
    }

    @inlinable
    static func expect(_ wireType: WireType, _ actual: WireType, field: String) throws(MalformedMessageError) {
        guard wireType == actual else {
            throw MalformedMessageError("field \(field) has wire type \(actual.rawValue), expected \(wireType.rawValue)")
        }
    }
}

/// The envelope's shared pieces: metadata entries (`KeyValue{1 key, 2 value}`)
/// and the prefix of a payload field whose bytes follow separately.
extension ByteBuffer {
    static func keyValueSize(_ entry: Metadata.Entry) -> Int {
        stringFieldSize(1, entry.key) + stringFieldSize(2, entry.value)
    }

    static func metadataFieldsSize(_ metadata: Metadata, field: UInt32) -> Int {
        metadata.reduce(0) { $0 + lengthDelimitedFieldSize(field: field, length: keyValueSize($1)) }
    }

    mutating func writeMetadataFields(_ metadata: Metadata, field: UInt32) {
        for entry in metadata {
            writeTag(field: field, wireType: .lengthDelimited)
            writeVarint(UInt64(Self.keyValueSize(entry)))
            writeStringField(1, entry.key)
            writeStringField(2, entry.value)
        }
    }

    /// Tag and length of a non-empty payload field; nothing for an empty one.
    static func payloadPrefixSize(field: UInt32, length: Int) -> Int {
        length > 0 ? tagSize(field: field) + varintSize(UInt64(length)) : 0
    }

    mutating func writePayloadPrefix(field: UInt32, length: Int) {
        guard length > 0 else { return }
        writeTag(field: field, wireType: .lengthDelimited)
        writeVarint(UInt64(length))
    }

    /// Reads a whole `KeyValue` message (this buffer is its body).
    mutating func readKeyValue() throws(MalformedMessageError) -> Metadata.Entry {
        var entry = Metadata.Entry(key: "", value: "")
        while readableBytes > 0 {
            let (field, wireType) = try readTag()
            switch field {
            case 1:
                try Self.expect(.lengthDelimited, wireType, field: "metadata.key")
                entry.key = try readStringField()
            case 2:
                try Self.expect(.lengthDelimited, wireType, field: "metadata.value")
                entry.value = try readStringField()
            default:
                try skipField(wireType)
            }
        }
        return entry
    }
}
