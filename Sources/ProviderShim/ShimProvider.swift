public import Core
internal import SwiftProtobuf

/// Serves a ``ProviderBackend`` as the whole provider contract: negotiates
/// the protocol version in `Handshake` and turns `Shutdown` into a graceful
/// stop of the process.
public struct ShimProvider<Backend: ProviderBackend>: ProviderService {
    public let backend: Backend
    private let onShutdown: @Sendable () -> Void

    /// - Parameter onShutdown: called after a `Shutdown` call is answered.
    public init(backend: Backend, onShutdown: @escaping @Sendable () -> Void) {
        self.backend = backend
        self.onShutdown = onShutdown
    }

    /// The highest version both sides speak, or FailedPrecondition naming both lists.
    public static func negotiate(offered: [UInt32], identity: ShimIdentity) throws(RPCError) -> UInt32 {
        guard let version = offered.filter(identity.protocolVersions.contains).max() else {
            throw RPCError(
                .failedPrecondition,
                "shim \(identity.name) speaks protocol versions \(identity.protocolVersions); the controller offered \(offered)"
            )
        }
        return version
    }

    public func handshake(_ request: ProviderV1.HandshakeRequest, context: RPCServerContext) async throws -> ProviderV1.HandshakeResponse {
        try await backend.intercept(method: "Handshake", credential: nil, ids: [])
        let identity = backend.identity
        let version = try Self.negotiate(offered: request.protocolVersions, identity: identity)
        return .with {
            $0.protocolVersion = version
            $0.shimName = identity.name
            $0.shimVersion = identity.version
            $0.cloudTypes = identity.cloudTypes
            $0.capabilities = identity.capabilities
        }
    }

    public func health(_ request: ProviderV1.HealthRequest, context: RPCServerContext) async throws -> ProviderV1.HealthResponse {
        try await backend.intercept(method: "Health", credential: nil, ids: [])
        return try await backend.health(context: context)
    }

    public func validateCredential(
        _ request: ProviderV1.ValidateCredentialRequest,
        context: RPCServerContext
    ) async throws -> ProviderV1.ValidateCredentialResponse {
        try await backend.intercept(method: "ValidateCredential", credential: request.credential, ids: [])
        return try await backend.validateCredential(request, context: context)
    }

    public func instances(_ request: ProviderV1.InstancesRequest, context: RPCServerContext) async throws -> ProviderV1.InstancesResponse {
        try await backend.intercept(method: "Instances", credential: request.credential, ids: request.instanceIds)
        return try await backend.instances(request, context: context)
    }

    public func networkInterfaces(
        _ request: ProviderV1.NetworkInterfacesRequest,
        context: RPCServerContext
    ) async throws -> ProviderV1.NetworkInterfacesResponse {
        try await backend.intercept(method: "NetworkInterfaces", credential: request.credential, ids: request.instanceIds)
        return try await backend.networkInterfaces(request, context: context)
    }

    public func shutdown(_ request: ProviderV1.ShutdownRequest, context: RPCServerContext) async throws -> ProviderV1.ShutdownResponse {
        try await backend.intercept(method: "Shutdown", credential: nil, ids: [])
        // Stop after this answer is on its way, so the drain does not wait
        // for the Shutdown call itself.
        let onShutdown = self.onShutdown
        Task { onShutdown() }
        return ProviderV1.ShutdownResponse()
    }
}
