public import Core
public import ProviderShim
internal import SwiftProtobuf
public import Logging
#if canImport(Glibc)
internal import Glibc
#endif

/// `provider-shim fake`: a cloud made of a ``FakeScenario``, with faults.
public struct FakeBackend: ProviderBackend {
    public let cloud: FakeCloud
    private let logger: Logger
    private let callLog: FakeCallLog?

    public init(cloud: FakeCloud, logger: Logger, callLog: FakeCallLog? = nil) {
        self.cloud = cloud
        self.logger = logger
        self.callLog = callLog
    }

    public var identity: ShimIdentity {
        ShimIdentity(
            name: "fake",
            version: ProductVersion.current,
            cloudTypes: cloud.scenario.cloudTypes,
            capabilities: .with {
                $0.maxBatchSize = cloud.scenario.maxBatchSize
                $0.credentialCache = false
            }
        )
    }

    public func intercept(method: String, credential: ProviderV1.Credential?, ids: [String]) async throws {
        // The call's span starts before any fault's latency; the method
        // (or a fault's error below) ends it.
        let logged = callLog != nil && (method == "Instances" || method == "NetworkInterfaces")
        if logged { callLog?.record("start", method: method, credential: credential?.name ?? "", ids: ids) }
        do {
            try await interceptFaults(method: method, credential: credential, ids: ids)
        } catch {
            if logged { callLog?.record("end", method: method, credential: credential?.name ?? "", ids: ids) }
            throw error
        }
    }

    private func interceptFaults(method: String, credential: ProviderV1.Credential?, ids: [String]) async throws {
        let name = cloud.scenarioName(of: credential)
        if cloud.record(method: method, ids: ids, credentialName: name) {
            logger.critical("crashing, as a crash fault says", metadata: ["method": "\(method)"])
            _exit(3)
        }
        for fault in cloud.activeFaults(method: method, credentialName: name) {
            switch fault.kind {
            case .hang:
                logger.warning("hanging, as a hang fault says", metadata: ["method": "\(method)"])
                Self.blockThisThreadForever()
            case .latency:
                try await Task.sleep(for: .nanoseconds(fault.delayNano))
            case .throttle:
                let retryAfter = Duration.nanoseconds(fault.retryAfterNano == 0 ? 1_000_000_000 : fault.retryAfterNano)
                throw RPCError(
                    .resourceExhausted,
                    fault.message.isEmpty ? "RequestLimitExceeded: request limit exceeded" : fault.message,
                    metadata: [(RPCError.retryAfterKey, "\(retryAfter.totalNanoseconds / 1_000_000)")]
                )
            case .unavailable:
                throw RPCError(.unavailable, fault.message.isEmpty ? "the fake cloud cannot be reached" : fault.message)
            case .permissionDenied where method != "ValidateCredential":
                throw RPCError(.permissionDenied, fault.message.isEmpty ? "UnauthorizedOperation: not allowed to \(method)" : fault.message)
            default:
                break  // auth failures are answered by the methods; crash counted above
            }
        }
    }

    public func validateCredential(
        _ request: ProviderV1.ValidateCredentialRequest,
        context: RPCServerContext
    ) async throws -> ProviderV1.ValidateCredentialResponse {
        let verdict = cloud.verdict(for: request.credential)
        return .with {
            $0.valid = verdict.valid
            $0.reason = verdict.reason
        }
    }

    public func instances(_ request: ProviderV1.InstancesRequest, context: RPCServerContext) async throws -> ProviderV1.InstancesResponse {
        defer { callLog?.record("end", method: "Instances", credential: request.credential.name, ids: request.instanceIds) }
        try authenticate(request.credential)
        return .with { $0.results = cloud.instances(request.instanceIds) }
    }

    public func networkInterfaces(
        _ request: ProviderV1.NetworkInterfacesRequest,
        context: RPCServerContext
    ) async throws -> ProviderV1.NetworkInterfacesResponse {
        defer { callLog?.record("end", method: "NetworkInterfaces", credential: request.credential.name, ids: request.instanceIds) }
        try authenticate(request.credential)
        return .with { $0.results = cloud.networkInterfaces(request.instanceIds) }
    }

    private func authenticate(_ credential: ProviderV1.Credential) throws(RPCError) {
        let verdict = cloud.verdict(for: credential)
        guard verdict.valid else { throw RPCError(.unauthenticated, verdict.reason) }
    }

    /// A hung cloud SDK: this thread (and so its event loop) never returns.
    static func blockThisThreadForever() -> Never {
        while true { sleep(3600) }
    }
}
