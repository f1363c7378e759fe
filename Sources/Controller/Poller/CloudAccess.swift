public import Core

/// What the poller needs of a provider (Juju's "environ"): the three cloud
/// calls. In production ``SupervisedCloudAccess`` answers them through the
/// provider's live shim (its ``ProviderClient``); unit tests use an
/// in-memory cloud.
///
/// Methods throw `RPCError` with the contract's codes, or
/// ``ShimUnavailable`` when no shim serves the provider.
///
/// **Results align with the ids asked**: ``instances(_:cloud:credential:)``
/// and ``networkInterfaces(_:cloud:credential:)`` answer one result per id,
/// in the order asked, each carrying its id (`docs/DESIGN.md` §4). The
/// caller checks it (``InstanceAnswer/misalignment(_:asked:)``) and treats
/// an answer that breaks it as a failed call.
public protocol CloudAccess: Sendable {
    func validateCredential(_ credential: ProviderV1.Credential, cloud: ProviderV1.CloudSpec) async throws
        -> ProviderV1.ValidateCredentialResponse
    /// One result per id of `ids`, in that order.
    func instances(_ ids: [String], cloud: ProviderV1.CloudSpec, credential: ProviderV1.Credential) async throws
        -> [ProviderV1.InstanceResult]
    /// One result per id of `ids`, in that order.
    func networkInterfaces(_ ids: [String], cloud: ProviderV1.CloudSpec, credential: ProviderV1.Credential) async throws
        -> [ProviderV1.InstanceInterfaces]
}

/// A provider's answer about one instance id: what the alignment rule of
/// ``CloudAccess`` is checked on.
public protocol InstanceAnswer {
    var instanceID: String { get }
}

extension ProviderV1.InstanceResult: InstanceAnswer {}
extension ProviderV1.InstanceInterfaces: InstanceAnswer {}

extension InstanceAnswer {
    /// What breaks the alignment rule in `answers` to the ids `asked` (a
    /// count that differs, or a result for another id than the one asked
    /// at its place), or nil when they align.
    public static func misalignment(_ answers: [Self], asked: [String]) -> String? {
        guard answers.count == asked.count else {
            return "the provider answered \(answers.count) results for \(asked.count) ids"
        }
        for (index, (answer, id)) in zip(answers, asked).enumerated() where answer.instanceID != id {
            return "result \(index) is for \(answer.instanceID), expected \(id)"
        }
        return nil
    }
}

/// The provider's shim is not serving (it exited and is being restarted, or
/// has not started yet). Not an answer from the cloud: the poller keeps the
/// machines' schedule and tries again shortly, instead of bumping them.
public struct ShimUnavailable: Error, Hashable, Sendable, CustomStringConvertible {
    public var provider: String
    public var reason: String
    /// No shim has served yet: the controller is starting, not failing.
    public var starting: Bool

    public init(provider: String, reason: String, starting: Bool = false) {
        self.provider = provider
        self.reason = reason
        self.starting = starting
    }

    public var description: String { "provider \(provider): \(reason)" }
}

extension ShimUnavailable: RPCErrorConvertible {
    /// Unavailable: the shim is expected back, so a retry may pass.
    public var rpcError: RPCError { RPCError(.unavailable, description) }
}

/// A configured provider: its cloud and how to reach it.
public struct ProviderEndpoint: Sendable {
    public var cloud: ProviderV1.CloudSpec
    public var access: any CloudAccess

    public init(cloud: ProviderV1.CloudSpec, access: any CloudAccess) {
        self.cloud = cloud
        self.access = access
    }
}

/// Finds the endpoint of a provider by name (the supervisor routes to the
/// live shim; a swap changes what it returns).
public protocol ProviderRouter: Sendable {
    func endpoint(for provider: String) -> ProviderEndpoint?
    /// Calls `handler` with a provider's name each time its shim starts
    /// serving (after a start, a restart or a swap), so that the poller
    /// polls the machines that waited for it at once. Optional: a router
    /// whose providers never go away need not call it.
    func whenShimServes(_ handler: @escaping @Sendable (String) -> Void)
    /// Calls `handler` with a provider's name each time its shim is swapped
    /// for another backend (live, by `providers swap` or a reload), so that
    /// the poller polls every machine of the provider at once instead of
    /// showing the old backend's answers until each one's next poll.
    /// Optional, like ``whenShimServes(_:)``.
    func whenProviderSwapped(_ handler: @escaping @Sendable (String) -> Void)
}

extension ProviderRouter {
    public func whenShimServes(_ handler: @escaping @Sendable (String) -> Void) {}
    public func whenProviderSwapped(_ handler: @escaping @Sendable (String) -> Void) {}
}

/// A fixed set of endpoints.
public struct StaticProviderRouter: ProviderRouter {
    public var endpoints: [String: ProviderEndpoint]
    public init(_ endpoints: [String: ProviderEndpoint]) { self.endpoints = endpoints }
    public func endpoint(for provider: String) -> ProviderEndpoint? { endpoints[provider] }
}
