import Core
import NIOCore
import Testing
import TestSupport

/// How any error becomes a call's status: its code chosen by the error
/// itself when it can, the error kept as the cause in this process and
/// never sent.
@Suite struct RPCErrorTests {
    struct Plain: Error, CustomStringConvertible {
        var description: String { "plain failure" }
    }

    @Test func aConvertibleErrorChoosesItsCodeAndIsKeptAsTheCause() throws {
        let error = ChoosingError(code: .notFound, message: "no machine \"m1\"", held: "x")
        let rpc = RPCError(from: error)
        #expect(rpc.code == .notFound)
        #expect(rpc.message == "no machine \"m1\"")
        let cause = try #require(rpc.cause as? ChoosingError)
        #expect(cause.held == "x")
    }

    @Test func aCauseTheConvertibleErrorSetsItselfIsKept() throws {
        struct Wrapping: RPCErrorConvertible {
            var rpcError: RPCError { RPCError(.unavailable, "busy", cause: Plain()) }
        }
        let rpc = RPCError(from: Wrapping())
        #expect(rpc.code == .unavailable)
        #expect(rpc.cause is Plain)
    }

    @Test func otherErrorsAreUnknownOrCancelledAndKeptAsTheCause() {
        let unknown = RPCError(from: Plain())
        #expect(unknown == RPCError(.unknown, "plain failure"))
        #expect(unknown.cause is Plain)
        let cancelled = RPCError(from: CancellationError())
        #expect(cancelled == RPCError(.cancelled, "the call was cancelled"))
        #expect(cancelled.cause is CancellationError)
    }

    @Test func anRPCErrorStaysAsItIsWithItsCause() {
        let original = RPCError(.aborted, "try again", metadata: [(RPCError.retryAfterKey, "5")], cause: Plain())
        let converted = RPCError(from: original)
        #expect(converted == original)
        #expect(converted.retryAfter == .milliseconds(5))
        #expect(converted.cause is Plain)
    }

    @Test func theCauseIsNeitherInEqualityNorTheHashNorTheDescription() {
        let bare = RPCError(.unavailable, "the database is busy")
        let caused = RPCError(from: ChoosingError(code: .unavailable, message: "the database is busy", held: "secret-in-the-cause"))
        #expect(caused == bare)
        #expect(Set([bare, caused]).count == 1)
        #expect(caused.description == "Unavailable: the database is busy")
        #expect(!"\(caused)".contains("secret-in-the-cause"))
        #expect(caused != RPCError(.internal, "the database is busy"), "the code still counts")
    }

    @Test func aHandlersConvertibleErrorGoesOutWithItsCodeAndWithoutItsCause() async throws {
        try await RPCFixture.with { fixture in
            let raw = try await fixture.raw()
            try await raw.sendRequest(
                RequestEnvelope(service: RPCFixture.service, method: "ThrowConvertible", payload: ByteBuffer()), streamID: 1)
            guard case .frame(let frame)? = try await raw.next() else {
                Issue.record("no response frame")
                return
            }
            let response = try ResponseEnvelope(decoding: frame.data)
            #expect(response.error == RPCError(.unavailable, "the database is busy"))
            #expect(response.error?.cause == nil, "a cause is never decoded from the wire")
            #expect(!String(decoding: frame.data.readableBytesView, as: UTF8.self).contains("secret-in-the-cause"))
            await raw.close()
        }
    }
}
