public import Core
internal import NIOConcurrencyHelpers

/// The poller's way into a supervised provider, and the one ``CloudAccess``
/// over shims: each call goes to the live shim's ``ProviderClient`` (which
/// spells it), bounded by the call timeout; while no shim serves, calls
/// fail at once with ``ShimUnavailable``.
public final class SupervisedCloudAccess: CloudAccess {
    public let provider: String
    private let timeout: Duration

    private struct State {
        /// The live shim's client; nil while none serves.
        var client: ProviderClient?
        /// Whether a shim has served or failed yet (before that, "starting").
        var settled = false
        var whenServing: (@Sendable () -> Void)?
    }

    private let state = NIOLockedValueBox(State())

    init(provider: String, timeout: Duration) {
        self.provider = provider
        self.timeout = timeout
    }

    /// Calls `handler` each time a shim starts serving (start, restart, swap).
    public func whenServing(_ handler: @escaping @Sendable () -> Void) {
        state.withLockedValue { $0.whenServing = handler }
    }

    /// New calls go to `client` (nil: none serves).
    func route(to client: ProviderClient?) {
        let serving = state.withLockedValue { state -> (@Sendable () -> Void)? in
            state.client = client
            guard client != nil else { return nil }
            state.settled = true
            return state.whenServing
        }
        serving?()
    }

    /// A first start failed: from now on a missing shim is a problem.
    func settle() { state.withLockedValue { $0.settled = true } }

    private func live() throws(ShimUnavailable) -> ProviderClient {
        let (client, settled) = state.withLockedValue { ($0.client, $0.settled) }
        guard let client else {
            if !settled {
                throw ShimUnavailable(provider: provider, reason: "its shim is starting", starting: true)
            }
            throw ShimUnavailable(provider: provider, reason: "no shim is running (it is being restarted)")
        }
        return client
    }

    /// Runs `call` on the live shim. A call that lost the race with a swap
    /// (it went to the old shim as that one stopped) runs again on the new
    /// one, so a swap fails no call. A call cut off because its shim died
    /// throws ``ShimUnavailable``.
    private func onLiveShim<T>(_ call: (ProviderClient) async throws -> T) async throws -> T {
        let first = try live()
        do {
            return try await call(first)
        } catch let error as RPCError where error.code == .unavailable && !first.connection.isActive {
            guard let now = state.withLockedValue({ $0.client }), now.connection !== first.connection else {
                throw ShimUnavailable(provider: provider, reason: "the shim went away during the call (\(error.message))")
            }
            return try await call(now)
        }
    }

    public func validateCredential(_ credential: ProviderV1.Credential, cloud: ProviderV1.CloudSpec) async throws
        -> ProviderV1.ValidateCredentialResponse
    {
        try await onLiveShim { [timeout] in try await $0.validateCredential(cloud: cloud, credential: credential, timeout: timeout) }
    }

    public func instances(_ ids: [String], cloud: ProviderV1.CloudSpec, credential: ProviderV1.Credential) async throws
        -> [ProviderV1.InstanceResult]
    {
        try await onLiveShim { [timeout] in try await $0.instances(cloud: cloud, credential: credential, ids: ids, timeout: timeout) }
    }

    public func networkInterfaces(_ ids: [String], cloud: ProviderV1.CloudSpec, credential: ProviderV1.Credential) async throws
        -> [ProviderV1.InstanceInterfaces]
    {
        try await onLiveShim { [timeout] in try await $0.networkInterfaces(cloud: cloud, credential: credential, ids: ids, timeout: timeout) }
    }
}
