public import Core
internal import Foundation

/// The conformance service `instancepoller.testing.v1.Echo`
/// (proto/instancepoller/testing/v1/echo.proto), served by the interop tests
/// and scripts/bench-rpc with the same semantics as the Go fixture in
/// Tests/Fixtures/go: echo the payload and the metadata received, or fail
/// with the status asked for, after an optional delay.
public enum EchoService {
    public typealias Request = Instancepoller_Testing_V1_EchoRequest
    public typealias Response = Instancepoller_Testing_V1_EchoResponse

    public static let serviceName = "instancepoller.testing.v1.Echo"
    public static let echo = MethodDescriptor<Request, Response>(service: serviceName, method: "Echo")

    /// Adds the Echo service to `registry`.
    public static func register(into registry: inout RPCServiceRegistry) {
        registry.register(echo) { request, context in
            try await handle(request, context)
        }
    }

    static func handle(_ request: Request, _ context: RPCServerContext) async throws -> Response {
        let timeRemaining = context.timeRemaining
        if request.delayNano > 0 {
            try await Task.sleep(for: .nanoseconds(request.delayNano))
        }
        if request.failCode != 0 {
            throw RPCError(RPCStatusCode(rawValue: request.failCode), request.failMessage)
        }
        var response = Response()
        response.payload = request.payload
        response.metadata = context.metadata.map { entry in
            var out = Instancepoller_Testing_V1_MetadataEntry()
            out.key = entry.key
            out.value = entry.value
            return out
        }
        response.timeoutNano = timeRemaining?.totalNanoseconds ?? 0
        return response
    }
}
