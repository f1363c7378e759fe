public import Core
public import Logging

/// The controller's typed client of one provider shim
/// (`instancepoller.provider.v1.Provider`) over one connection: the one
/// place that spells each call (its descriptor, its request, its deadline
/// and how its answer or failure maps to an error). The poller reaches it
/// through ``SupervisedCloudAccess``, which routes to the live shim's client.
///
/// With tracing on (``ControllerTracing``), the cloud calls
/// (ValidateCredential, Instances, NetworkInterfaces) are client spans whose
/// trace context travels to the shim in the request metadata.
///
/// Every method throws `RPCError`: the shim's status (e.g. Unauthenticated,
/// PermissionDenied, ResourceExhausted with ``RPCError/retryAfter``), or
/// DeadlineExceeded / Unavailable from the transport.
public struct ProviderClient: Sendable {
    public let connection: RPCClient

    public init(connection: RPCClient) {
        self.connection = connection
    }

    /// Connects to the shim listening on `socketPath`. `peerPolicy` is
    /// checked (SO_PEERCRED) before anything is sent: the controller passes
    /// one that admits only the shim it started and its descendants.
    public static func connect(socketPath: String, peerPolicy: PeerPolicy = .sameUserOrRoot, logger: Logger) async throws -> ProviderClient {
        ProviderClient(connection: try await RPCClient.connect(unixSocketPath: socketPath, peerPolicy: peerPolicy, logger: logger))
    }

    /// Offers the versions this controller speaks; the shim picks one.
    ///
    /// - Throws: `RPCError` FailedPrecondition when the shim answers with a
    ///   version that was not offered (as well as the shim's own errors).
    public func handshake(
        controllerVersion: String,
        versions: [UInt32] = ProviderV1.protocolVersions,
        timeout: Duration
    ) async throws -> ProviderV1.HandshakeResponse {
        var request = ProviderV1.HandshakeRequest()
        request.protocolVersions = versions
        request.controllerVersion = controllerVersion
        let response = try await connection.call(ProviderV1.handshake, request, timeout: timeout)
        guard versions.contains(response.protocolVersion) else {
            throw RPCError(
                .failedPrecondition,
                "shim \(response.shimName) picked protocol version \(response.protocolVersion), not one of \(versions)"
            )
        }
        return response
    }

    public func health(timeout: Duration) async throws -> ProviderV1.HealthResponse {
        try await connection.call(ProviderV1.health, ProviderV1.HealthRequest(), timeout: timeout)
    }

    public func validateCredential(
        cloud: ProviderV1.CloudSpec,
        credential: ProviderV1.Credential,
        timeout: Duration
    ) async throws -> ProviderV1.ValidateCredentialResponse {
        var request = ProviderV1.ValidateCredentialRequest()
        request.cloud = cloud
        request.credential = credential
        return try await traced(ProviderV1.validateCredential, request, timeout: timeout)
    }

    /// Instance status for `ids`: one result per id, in the order asked.
    ///
    /// - Throws: `RPCError` Internal when the shim answers with results that
    ///   are not aligned with the ids asked for.
    public func instances(
        cloud: ProviderV1.CloudSpec,
        credential: ProviderV1.Credential,
        ids: [String],
        timeout: Duration
    ) async throws -> [ProviderV1.InstanceResult] {
        var request = ProviderV1.InstancesRequest()
        request.cloud = cloud
        request.credential = credential
        request.instanceIds = ids
        let response = try await traced(ProviderV1.instances, request, ids: ids.count, timeout: timeout)
        try Self.checkAligned(response.results, with: ids, method: "Instances")
        return response.results
    }

    /// Network interfaces for `ids`: one result per id, in the order asked.
    ///
    /// - Throws: `RPCError` Internal, as ``instances(cloud:credential:ids:timeout:)``.
    public func networkInterfaces(
        cloud: ProviderV1.CloudSpec,
        credential: ProviderV1.Credential,
        ids: [String],
        timeout: Duration
    ) async throws -> [ProviderV1.InstanceInterfaces] {
        var request = ProviderV1.NetworkInterfacesRequest()
        request.cloud = cloud
        request.credential = credential
        request.instanceIds = ids
        let response = try await traced(ProviderV1.networkInterfaces, request, ids: ids.count, timeout: timeout)
        try Self.checkAligned(response.results, with: ids, method: "NetworkInterfaces")
        return response.results
    }

    public func shutdown(drainTimeout: Duration, timeout: Duration) async throws {
        var request = ProviderV1.ShutdownRequest()
        request.drainTimeoutNano = drainTimeout.totalNanoseconds
        _ = try await connection.call(ProviderV1.shutdown, request, timeout: timeout)
    }

    /// A shim that breaks the alignment rule of ``CloudAccess`` answered
    /// nothing usable: Internal, saying how.
    private static func checkAligned<Answer: InstanceAnswer>(_ answers: [Answer], with asked: [String], method: String) throws(RPCError) {
        if let problem = Answer.misalignment(answers, asked: asked) {
            throw RPCError(.internal, "\(method): \(problem)")
        }
    }
}
