public import Core

/// A provider backend: the six methods of
/// `instancepoller.provider.v1.Provider`, as a shim implements them.
///
/// Methods throw `RPCError` with the contract's codes: Unauthenticated for a
/// bad credential, PermissionDenied for a credential without permission,
/// ResourceExhausted (with `retry-after-ms` metadata) when throttled,
/// Unavailable when the cloud cannot be reached. Messages never carry a
/// secret. Results of `instances` and `networkInterfaces` are index-aligned
/// with the ids asked for; "not found" is a result, not an error.
public protocol ProviderService: Sendable {
    func handshake(_ request: ProviderV1.HandshakeRequest, context: RPCServerContext) async throws -> ProviderV1.HandshakeResponse
    func health(_ request: ProviderV1.HealthRequest, context: RPCServerContext) async throws -> ProviderV1.HealthResponse
    func validateCredential(
        _ request: ProviderV1.ValidateCredentialRequest,
        context: RPCServerContext
    ) async throws -> ProviderV1.ValidateCredentialResponse
    func instances(_ request: ProviderV1.InstancesRequest, context: RPCServerContext) async throws -> ProviderV1.InstancesResponse
    func networkInterfaces(
        _ request: ProviderV1.NetworkInterfacesRequest,
        context: RPCServerContext
    ) async throws -> ProviderV1.NetworkInterfacesResponse
    func shutdown(_ request: ProviderV1.ShutdownRequest, context: RPCServerContext) async throws -> ProviderV1.ShutdownResponse
}

extension RPCServiceRegistry {
    /// Serves `provider` as `instancepoller.provider.v1.Provider`.
    public mutating func register(provider: some ProviderService) {
        register(ProviderV1.handshake) { try await provider.handshake($0, context: $1) }
        register(ProviderV1.health) { try await provider.health($0, context: $1) }
        // The cloud calls continue the controller's trace (ShimTracing).
        register(ProviderV1.validateCredential) { request, context in
            try await ShimTracing.serve(ProviderV1.validateCredential, context) { try await provider.validateCredential(request, context: context) }
        }
        register(ProviderV1.instances) { request, context in
            try await ShimTracing.serve(ProviderV1.instances, context) { try await provider.instances(request, context: context) }
        }
        register(ProviderV1.networkInterfaces) { request, context in
            try await ShimTracing.serve(ProviderV1.networkInterfaces, context) { try await provider.networkInterfaces(request, context: context) }
        }
        register(ProviderV1.shutdown) { try await provider.shutdown($0, context: $1) }
    }
}
