@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import NIOConcurrencyHelpers
import SwiftProtobuf

/// An in-memory cloud behind ``CloudAccess`` for the poller's unit tests:
/// instances the test sets, every call recorded, errors injected per method.
final class TestCloud: CloudAccess, Sendable {
    struct Call: Hashable, Sendable {
        var method: String
        var ids: [String]
        var credential: String
    }

    private struct State {
        var instances: [String: (status: ProviderV1.InstanceStatus, interfaces: [ProviderV1.NetworkInterface])] = [:]
        var calls: [Call] = []
        var failures: [String: any Error & Sendable] = [:]  // method → error, until cleared
        var validity: (valid: Bool, reason: String) = (true, "")
        /// Answers of a method leave out this many results (a broken shim).
        var shortBy: [String: Int] = [:]
        /// Answers of these methods come in the reverse order (a broken shim).
        var reversed: Set<String> = []
        var inFlight = 0
        var maxInFlight = 0
        var callWaiters: [(method: String, count: Int, continuation: CheckedContinuation<Void, Never>)] = []

        /// The ids `method` answers for, in its answer's order.
        func answered(_ ids: [String], _ method: String) -> [String] {
            let kept = Array(ids.dropLast(shortBy[method, default: 0]))
            return reversed.contains(method) ? kept.reversed() : kept
        }
    }

    private let state = NIOLockedValueBox(State())
    /// Holds Instances calls in flight when a test says so.
    let gate = CallGate()

    func set(_ id: String, _ state: ProviderV1.InstanceState, addresses: [String] = [], message: String = "") {
        let status = ProviderV1.InstanceStatus.with { $0.state = state; $0.rawStatus = "\(state)"; $0.message = message }
        let interfaces: [ProviderV1.NetworkInterface] = addresses.isEmpty ? [] : [.with {
            $0.deviceIndex = 0
            $0.addresses = addresses.map { value in .with { $0.value = value; $0.type = .ipv4; $0.scope = .cloudLocal } }
        }]
        self.state.withLockedValue { $0.instances[id] = (status, interfaces) }
    }

    func remove(_ id: String) { state.withLockedValue { _ = $0.instances.removeValue(forKey: id) } }
    func fail(_ method: String, with error: (any Error & Sendable)?) { state.withLockedValue { $0.failures[method] = error } }
    func setValidity(_ valid: Bool, reason: String = "") { state.withLockedValue { $0.validity = (valid, reason) } }
    func answerFewer(_ count: Int, in method: String = "Instances") { state.withLockedValue { $0.shortBy[method] = count } }
    func answerReversed(in method: String) { state.withLockedValue { _ = $0.reversed.insert(method) } }

    var calls: [Call] { state.withLockedValue { $0.calls } }
    func calls(_ method: String) -> [Call] { calls.filter { $0.method == method } }
    var maxInFlight: Int { state.withLockedValue { $0.maxInFlight } }
    func resetCalls() { state.withLockedValue { $0.calls = [] } }

    /// Returns once `count` calls of `method` were made.
    func waitUntilCalls(_ method: String, _ count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLockedValue { state -> Bool in
                if state.calls.filter({ $0.method == method }).count >= count { return true }
                state.callWaiters.append((method, count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private func enter(_ method: String, _ ids: [String], _ credential: ProviderV1.Credential) throws {
        let (failure, ready) = state.withLockedValue { state -> ((any Error & Sendable)?, [CheckedContinuation<Void, Never>]) in
            state.calls.append(Call(method: method, ids: ids, credential: credential.name))
            state.inFlight += 1
            state.maxInFlight = max(state.maxInFlight, state.inFlight)
            let made = state.calls.filter { $0.method == method }.count
            let ready = state.callWaiters.filter { $0.method == method && $0.count <= made }.map(\.continuation)
            state.callWaiters.removeAll { $0.method == method && $0.count <= made }
            return (state.failures[method], ready)
        }
        for waiter in ready { waiter.resume() }
        if let failure {
            state.withLockedValue { $0.inFlight -= 1 }
            throw failure
        }
    }

    private func leave() { state.withLockedValue { $0.inFlight -= 1 } }

    func validateCredential(_ credential: ProviderV1.Credential, cloud: ProviderV1.CloudSpec) async throws -> ProviderV1.ValidateCredentialResponse {
        try enter("ValidateCredential", [], credential)
        defer { leave() }
        let validity = state.withLockedValue { $0.validity }
        return .with { $0.valid = validity.valid; $0.reason = validity.reason }
    }

    func instances(_ ids: [String], cloud: ProviderV1.CloudSpec, credential: ProviderV1.Credential) async throws -> [ProviderV1.InstanceResult] {
        try enter("Instances", ids, credential)
        defer { leave() }
        await Task.yield()
        await gate.pass()
        return state.withLockedValue { state in
            state.answered(ids, "Instances").map { id in
                .with {
                    $0.instanceID = id
                    if let instance = state.instances[id] {
                        $0.found = true
                        $0.status = instance.status
                    }
                }
            }
        }
    }

    func networkInterfaces(_ ids: [String], cloud: ProviderV1.CloudSpec, credential: ProviderV1.Credential) async throws -> [ProviderV1.InstanceInterfaces] {
        try enter("NetworkInterfaces", ids, credential)
        defer { leave() }
        return state.withLockedValue { state in
            state.answered(ids, "NetworkInterfaces").map { id in
                .with {
                    $0.instanceID = id
                    if let instance = state.instances[id] {
                        $0.found = true
                        $0.interfaces = instance.interfaces
                    }
                }
            }
        }
    }
}

/// Providers by name for the poller's tests; ``serve(_:)`` says a
/// provider's shim came back and ``swapped(_:)`` that it was swapped, as
/// the supervised fleet does.
final class TestRouter: ProviderRouter, Sendable {
    private let endpoints: [String: ProviderEndpoint]
    private let handler = NIOLockedValueBox<(@Sendable (String) -> Void)?>(nil)

    init(_ endpoints: [String: ProviderEndpoint]) { self.endpoints = endpoints }

    func endpoint(for provider: String) -> ProviderEndpoint? { endpoints[provider] }

    func whenShimServes(_ handler: @escaping @Sendable (String) -> Void) {
        self.handler.withLockedValue { $0 = handler }
    }

    func serve(_ provider: String) { handler.withLockedValue { $0 }?(provider) }

    private let swappedHandler = NIOLockedValueBox<(@Sendable (String) -> Void)?>(nil)

    func whenProviderSwapped(_ handler: @escaping @Sendable (String) -> Void) {
        swappedHandler.withLockedValue { $0 = handler }
    }

    /// Says a provider's shim was swapped for another backend, as the fleet does.
    func swapped(_ provider: String) { swappedHandler.withLockedValue { $0 }?(provider) }
}

extension Machine {
    /// The values of every address.
    var addressValues: [String] { addresses.map(\.value) }
}
