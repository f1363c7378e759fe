internal import Core
internal import SwiftProtobuf
internal import Tracing

extension ProviderClient {
    /// Calls `method` as ``RPCClient/call(_:_:metadata:timeout:)`` does; with
    /// tracing on, inside a client span (a child of the batch's) whose W3C
    /// trace context goes to the shim in the request metadata, so that the
    /// shim's spans continue the trace. The span's attributes: `rpc.system`
    /// (`ttrpc`), `rpc.service`, `rpc.method`, `rpc.ttrpc.status_code` (0
    /// when answered) and, for calls about instances, how many ids were
    /// asked for. Never a credential.
    func traced<Request, Response>(
        _ method: MethodDescriptor<Request, Response>,
        _ request: Request,
        ids: Int? = nil,
        timeout: Duration
    ) async throws -> Response {
        guard let tracer = ControllerTracing.tracer else {
            return try await connection.call(method, request, timeout: timeout)
        }
        return try await tracer.withSpan(method.fullName, ofKind: .client) { span in
            span.attributes["rpc.system"] = "ttrpc"
            span.attributes["rpc.service"] = method.service
            span.attributes["rpc.method"] = method.method
            if let ids { span.attributes["instancepoller.instance_ids"] = ids }
            var metadata = Metadata()
            tracer.inject(span.context, into: &metadata, using: MetadataInjector())
            do {
                let response = try await connection.call(method, request, metadata: metadata, timeout: timeout)
                span.attributes["rpc.ttrpc.status_code"] = Int(RPCStatusCode.ok.rawValue)
                return response
            } catch {
                let code = RPCError(from: error).code
                span.attributes["rpc.ttrpc.status_code"] = Int(code.rawValue)
                span.setStatus(SpanStatus(code: .error, message: "\(code)"))
                throw error
            }
        }
    }
}
