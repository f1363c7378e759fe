public import Core

/// The `RPCError` a call threw, or nil if it succeeded; any other error is
/// reported as Unknown so that assertions on the code fail visibly.
public func rpcError(_ body: () async throws -> Void) async -> RPCError? {
    do {
        try await body()
        return nil
    } catch let error as RPCError {
        return error
    } catch {
        return RPCError(.unknown, "not an RPCError: \(error)")
    }
}
