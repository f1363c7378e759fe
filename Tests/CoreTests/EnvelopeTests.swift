import Core
import Support
import Foundation
import NIOCore
import SwiftProtobuf
import Testing

/// The hand-written envelope codec against SwiftProtobuf's generated
/// `Ttrpc_Request` / `Ttrpc_Response`: same bytes meaning, both directions.
@Suite("ttrpc envelope")
struct EnvelopeTests {
    static let sample = RequestEnvelope(
        service: "instancepoller.provider.v1.Provider",
        method: "Instances",
        payload: ByteBuffer(bytes: Array(0..<200)),
        timeoutNanos: 1_500_000_000,
        metadata: [("k", "v1"), ("k", "v2"), ("other", "")]
    )

    @Test func requestDecodesWithGeneratedType() throws {
        var buffer = ByteBuffer()
        Self.sample.encode(into: &buffer)
        #expect(buffer.readableBytes == Self.sample.encodedSize)
        let generated = try Ttrpc_Request(buffer: buffer)
        #expect(generated.service == Self.sample.service)
        #expect(generated.method == Self.sample.method)
        #expect(Array(generated.payload) == Array(0..<200))
        #expect(generated.timeoutNano == 1_500_000_000)
        #expect(generated.metadata.map { [$0.key, $0.value] } == [["k", "v1"], ["k", "v2"], ["other", ""]])
    }

    @Test func generatedRequestDecodesByHand() throws {
        var generated = Ttrpc_Request()
        generated.service = "s"
        generated.method = "m"
        generated.payload = Data([1, 2, 3])
        generated.timeoutNano = -5
        generated.metadata = [.with { $0.key = "a"; $0.value = "b" }]
        let decoded = try RequestEnvelope(decoding: try generated.serializedBuffer())
        #expect(decoded == RequestEnvelope(service: "s", method: "m", payload: ByteBuffer(bytes: [1, 2, 3]), timeoutNanos: -5, metadata: [("a", "b")]))
    }

    @Test func emptyRequestRoundTrips() throws {
        let empty = RequestEnvelope(service: "", method: "", payload: ByteBuffer())
        var buffer = ByteBuffer()
        empty.encode(into: &buffer)
        #expect(buffer.readableBytes == 0)
        #expect(try RequestEnvelope(decoding: buffer) == empty)
    }

    @Test func unknownFieldsAreSkipped() throws {
        var buffer = ByteBuffer()
        Self.sample.encode(into: &buffer)
        // field 9 varint, field 10 fixed64, field 11 bytes, field 12 fixed32
        buffer.writeBytes([9 << 3 | 0, 0x96, 0x01])
        buffer.writeBytes([10 << 3 | 1] + [UInt8](repeating: 1, count: 8))
        buffer.writeBytes([11 << 3 | 2, 2, 0xFF, 0xFF])
        buffer.writeBytes([12 << 3 | 5, 1, 2, 3, 4])
        #expect(try RequestEnvelope(decoding: buffer) == Self.sample)
    }

    @Test(arguments: [
        ([0x0A, 0x05, 0x61], "runs past the end"),  // service: 5 bytes announced, 1 present
        ([0x0A], "truncated length"),
        ([0x20], "truncated timeout_nano"),
        ([0x08, 0x01], "wire type"),  // service as a varint
        ([0x7B], "groups are not supported"),  // unknown field 15, start group
        ([0x07], "invalid wire type"),
        ([0x80], "truncated field tag"),
    ] as [([UInt8], String)])
    func malformedRequestsAreRejected(bytes: [UInt8], reason: String) {
        #expect {
            _ = try RequestEnvelope(decoding: ByteBuffer(bytes: bytes))
        } throws: { error in
            (error as? MalformedMessageError)?.reason.contains(reason) == true
        }
    }

    @Test func successResponseRoundTrips() throws {
        let response = ResponseEnvelope(payload: ByteBuffer(bytes: [5, 6, 7]), metadata: [("retry", "no")])
        var buffer = ByteBuffer()
        response.encode(into: &buffer)
        let generated = try Ttrpc_Response(buffer: buffer)
        #expect(!generated.hasStatus)
        #expect(Array(generated.payload) == [5, 6, 7])
        #expect(generated.metadata.map(\.key) == ["retry"])
        #expect(try ResponseEnvelope(decoding: buffer) == response)
    }

    @Test func errorResponseCarriesStatusDetailsAndMetadata() throws {
        var detail = Google_Protobuf_Any()
        detail.typeURL = "type.googleapis.com/google.rpc.RetryInfo"
        detail.value = Data([1, 2])
        let error = RPCError(.resourceExhausted, "slow down", metadata: [(RPCError.retryAfterKey, "250")], details: [detail])
        var buffer = ByteBuffer()
        ResponseEnvelope(error: error).encode(into: &buffer)
        let generated = try Ttrpc_Response(buffer: buffer)
        #expect(generated.status.code == 8)
        #expect(generated.status.message == "slow down")
        #expect(generated.status.details == [detail])
        let decoded = try ResponseEnvelope(decoding: buffer)
        #expect(decoded.error == error)
        #expect(decoded.error?.retryAfter == .milliseconds(250))
    }

    @Test func generatedErrorResponseDecodesByHand() throws {
        var generated = Ttrpc_Response()
        generated.status.code = 16
        generated.status.message = "AuthFailure: bad key"
        let decoded = try ResponseEnvelope(decoding: try generated.serializedBuffer())
        #expect(decoded.error?.code == .unauthenticated)
        #expect(decoded.error?.message == "AuthFailure: bad key")
    }

    @Test func statusWithCodeZeroIsSuccess() throws {
        var generated = Ttrpc_Response()
        generated.status.code = 0
        generated.payload = Data([1])
        let decoded = try ResponseEnvelope(decoding: try generated.serializedBuffer())
        #expect(decoded.error == nil)
        #expect(decoded.payload == ByteBuffer(bytes: [1]))
    }

    @Test func largePayloadTravelsAsItsOwnBuffer() throws {
        let payload = ByteBuffer(repeating: 0x5A, count: 1 << 20)
        let envelope = RequestEnvelope(service: "s", method: "m", payload: payload)
        let frame = try FrameEncoding.request(envelope, streamID: 3, allocator: ByteBufferAllocator())
        #expect(frame.payload == payload)
        var contiguous = frame.contiguous
        let header = contiguous.peekFrameHeader()!
        #expect(header.streamID == 3 && header.type == .request)
        #expect(Int(header.dataLength) == envelope.encodedSize)
        contiguous.moveReaderIndex(forwardBy: FrameHeader.size)
        #expect(try RequestEnvelope(decoding: contiguous) == envelope)
    }

    @Test func responsesAppendOneAfterAnotherAsTheirFramesWould() throws {
        let small = ResponseEnvelope(payload: ByteBuffer(bytes: [1, 2, 3]), metadata: [("k", "v")])
        let failed = ResponseEnvelope(error: RPCError(.notFound, "no such thing"))
        let large = ResponseEnvelope(payload: ByteBuffer(repeating: 7, count: 20_000))
        let allocator = ByteBufferAllocator()
        var buffer = ByteBuffer()
        #expect(try FrameEncoding.response(small, streamID: 1, appendingTo: &buffer, allocator: allocator) == nil)
        #expect(try FrameEncoding.response(failed, streamID: 3, appendingTo: &buffer, allocator: allocator) == nil)
        // Too large to copy: the head is appended, the payload handed back.
        let rest = try FrameEncoding.response(large, streamID: 5, appendingTo: &buffer, allocator: allocator)
        #expect(rest == large.payload)

        var expected = try FrameEncoding.response(small, streamID: 1, allocator: allocator).contiguous
        var second = try FrameEncoding.response(failed, streamID: 3, allocator: allocator).contiguous
        var third = try FrameEncoding.response(large, streamID: 5, allocator: allocator).head
        expected.writeBuffer(&second)
        expected.writeBuffer(&third)
        #expect(buffer == expected)
    }

    @Test func frameOverFourMiBIsRefusedBeforeSending() {
        let payload = ByteBuffer(repeating: 0, count: FrameHeader.maxDataLength)
        #expect {
            _ = try FrameEncoding.request(RequestEnvelope(service: "s", method: "m", payload: payload), streamID: 1, allocator: ByteBufferAllocator())
        } throws: { error in
            (error as? RPCError)?.code == .resourceExhausted
        }
    }

    /// The byte-level examples in proto/PROTOCOL.md, §2.
    @Test func protocolDocumentExamplesAreExact() throws {
        func hex(_ buffer: ByteBuffer) -> String {
            buffer.readableBytesView.map { String(format: "%02x", $0) }.joined(separator: " ")
        }
        let request = try FrameEncoding.request(
            RequestEnvelope(service: ProviderV1.serviceName, method: "Health", payload: ByteBuffer(), timeoutNanos: 5_000_000_000),
            streamID: 1, allocator: ByteBufferAllocator()
        )
        #expect(hex(request.contiguous) == "00 00 00 33 00 00 00 01 01 00 0a 23 "
            + "69 6e 73 74 61 6e 63 65 70 6f 6c 6c 65 72 2e 70 72 6f 76 69 64 65 72 2e 76 31 2e 50 72 6f 76 69 64 65 72 "
            + "12 06 48 65 61 6c 74 68 20 80 e4 97 d0 12")
        let response = try FrameEncoding.response(
            ResponseEnvelope(error: RPCError(.unauthenticated, "AuthFailure")), streamID: 1, allocator: ByteBufferAllocator()
        )
        #expect(hex(response.contiguous) == "00 00 00 11 00 00 00 01 02 00 0a 0f 08 10 12 0b 41 75 74 68 46 61 69 6c 75 72 65")
    }

    @Test func statusCodesHaveNames() {
        #expect(RPCStatusCode.unauthenticated.description == "Unauthenticated")
        #expect(RPCStatusCode(rawValue: 99).description == "code 99")
        #expect(RPCError(.notFound, "no such thing").description == "NotFound: no such thing")
    }

    @Test func metadataDescriptionShowsKeysOnly() {
        let metadata: Metadata = [("access-key", "AKIASECRET")]
        #expect(!metadata.description.contains("AKIASECRET"))
        #expect(metadata["access-key"] == ["AKIASECRET"])
    }
}
