internal import Tracing

extension PollEngine {
    /// Runs a batch's calls; with tracing on (``ControllerTracing``), inside
    /// a `poll batch` span, the parent of the batch's provider calls. Its
    /// attributes: `instancepoller.provider`, `instancepoller.machines` and
    /// `instancepoller.result` (as the batch metrics count it: ok, error,
    /// credential_invalid, throttled, shim_down, …). Off, it is the call.
    func traced<T>(
        _ key: CredentialKey,
        machines: Int,
        result: (T) -> String,
        _ body: () async throws -> T
    ) async throws -> T {
        guard let tracer = ControllerTracing.tracer else { return try await body() }
        return try await tracer.withSpan("poll batch", ofKind: .internal) { span in
            span.attributes["instancepoller.provider"] = key.provider
            span.attributes["instancepoller.machines"] = machines
            do {
                let answer = try await body()
                span.attributes["instancepoller.result"] = result(answer)
                return answer
            } catch {
                span.attributes["instancepoller.result"] = error is CancellationError ? "cancelled" : "error"
                throw error
            }
        }
    }
}
