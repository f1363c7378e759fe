public import Core
internal import SwiftProtobuf

/// Who a shim is, as its handshake says.
public struct ShimIdentity: Sendable {
    public var name: String
    public var version: String
    /// CloudSpec.type values served.
    public var cloudTypes: [String]
    public var capabilities: ProviderV1.Capabilities
    /// Protocol versions this shim speaks.
    public var protocolVersions: [UInt32]

    public init(
        name: String,
        version: String,
        cloudTypes: [String],
        capabilities: ProviderV1.Capabilities = ProviderV1.Capabilities(),
        protocolVersions: [UInt32] = ProviderV1.protocolVersions
    ) {
        self.name = name
        self.version = version
        self.cloudTypes = cloudTypes
        self.capabilities = capabilities
        self.protocolVersions = protocolVersions
    }
}

/// A cloud backend for the shim SDK: the cloud-facing methods only. The SDK
/// (``ShimProvider``) answers `Handshake` from ``identity`` and `Shutdown`
/// by stopping the process gracefully.
///
/// Methods throw `RPCError` with the contract's codes (Unauthenticated,
/// PermissionDenied, ResourceExhausted with `retry-after-ms`, Unavailable);
/// messages never carry a secret.
public protocol ProviderBackend: Sendable {
    var identity: ShimIdentity { get }

    func health(context: RPCServerContext) async throws -> ProviderV1.HealthResponse
    func validateCredential(_ request: ProviderV1.ValidateCredentialRequest, context: RPCServerContext) async throws
        -> ProviderV1.ValidateCredentialResponse
    func instances(_ request: ProviderV1.InstancesRequest, context: RPCServerContext) async throws -> ProviderV1.InstancesResponse
    func networkInterfaces(_ request: ProviderV1.NetworkInterfacesRequest, context: RPCServerContext) async throws
        -> ProviderV1.NetworkInterfacesResponse

    /// Called before every method, `Handshake` and `Shutdown` included, with
    /// what the call carries: a place for call accounting and fault
    /// injection. Throwing answers the call with that error.
    func intercept(method: String, credential: ProviderV1.Credential?, ids: [String]) async throws
}

extension ProviderBackend {
    public func health(context: RPCServerContext) async throws -> ProviderV1.HealthResponse {
        .with { $0.status = .serving }
    }

    public func intercept(method: String, credential: ProviderV1.Credential?, ids: [String]) async throws {}
}
