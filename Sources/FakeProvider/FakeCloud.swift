public import Core
internal import NIOConcurrencyHelpers
internal import SwiftProtobuf

/// The state of the fake cloud: instances with timelines, credentials,
/// faults and the record of calls. Thread-safe; every answer is computed at
/// the clock's current time.
public final class FakeCloud: Sendable {
    /// How many recent calls ``calls()`` keeps.
    public static let callHistoryLimit = 10_000

    /// The provider methods that talk to the cloud: what faults apply to when
    /// they name no methods.
    static let cloudMethods = ["ValidateCredential", "Instances", "NetworkInterfaces"]

    public typealias Call = Instancepoller_Fake_V1_Call

    private struct State {
        var timelines: [String: [FakeScenario.Event]] = [:]
        var faults: [UInt64: FakeScenario.Fault] = [:]
        var crashCounts: [UInt64: UInt64] = [:]
        var nextFaultID: UInt64 = 1
        var counts: [String: UInt64] = [:]
        var calls: [Call] = []
        var callsStart = 0  // ring buffer head once full
    }

    public let clock: any FakeClock
    public let scenario: FakeScenario
    private let state: NIOLockedValueBox<State>

    public init(scenario: FakeScenario, clock: any FakeClock) {
        self.scenario = scenario
        self.clock = clock
        var initial = State()
        for instance in scenario.instances {
            initial.timelines[instance.id] = instance.timeline
        }
        for fault in scenario.faults {
            initial.faults[initial.nextFaultID] = fault
            initial.nextFaultID += 1
        }
        state = NIOLockedValueBox(initial)
    }

    public var now: Duration { clock.elapsed() }

    // MARK: - Instances

    /// An instance as its timeline says at `time`: nil when it does not exist.
    static func evaluate(
        _ timeline: [FakeScenario.Event],
        at time: Duration
    ) -> (status: ProviderV1.InstanceStatus, interfaces: [ProviderV1.NetworkInterface])? {
        var exists = false
        var status = ProviderV1.InstanceStatus()
        var interfaces: [ProviderV1.NetworkInterface] = []
        for event in timeline {
            guard event.at <= time else { break }
            if event.gone {
                exists = false
                continue
            }
            exists = true
            if let state = event.state { status.state = state }
            if let raw = event.rawStatus { status.rawStatus = raw }
            if let message = event.message { status.message = message }
            if let new = event.interfaces { interfaces = new }
        }
        return exists ? (status, interfaces) : nil
    }

    public func instances(_ ids: [String]) -> [ProviderV1.InstanceResult] {
        evaluate(ids) { id, current in
            .with {
                $0.instanceID = id
                $0.found = current != nil
                if let current { $0.status = current.status }
            }
        }
    }

    public func networkInterfaces(_ ids: [String]) -> [ProviderV1.InstanceInterfaces] {
        evaluate(ids) { id, current in
            .with {
                $0.instanceID = id
                $0.found = current != nil
                if let current { $0.interfaces = current.interfaces }
            }
        }
    }

    /// One result per id, index-aligned, from each instance's state now.
    private func evaluate<Result>(
        _ ids: [String],
        _ result: (String, (status: ProviderV1.InstanceStatus, interfaces: [ProviderV1.NetworkInterface])?) -> Result
    ) -> [Result] {
        let time = now
        let fleets = scenario.fleets
        return state.withLockedValue { state in
            ids.map { id in
                if let timeline = state.timelines[id] { return result(id, Self.evaluate(timeline, at: time)) }
                for fleet in fleets {
                    guard let number = fleet.index(of: id) else { continue }
                    guard var current = Self.evaluate(fleet.timeline, at: time) else { return result(id, nil) }
                    current.interfaces = fleet.interfaces(of: number)
                    return result(id, current)
                }
                return result(id, nil)
            }
        }
    }

    /// Sets an instance from now on, replacing the rest of its timeline.
    public func setInstance(_ instance: Instancepoller_Fake_V1_Instance) {
        let time = now
        let event = FakeScenario.Event(
            at: time,
            state: instance.status.state,
            rawStatus: instance.status.rawStatus,
            message: instance.status.message,
            interfaces: instance.interfaces
        )
        state.withLockedValue { state in
            var timeline = (state.timelines[instance.id] ?? []).filter { $0.at <= time }
            timeline.append(event)
            state.timelines[instance.id] = timeline
        }
    }

    /// Makes an instance disappear from now on; false if it did not exist.
    @discardableResult
    public func removeInstance(_ id: String) -> Bool {
        let time = now
        return state.withLockedValue { state in
            guard let timeline = state.timelines[id] else { return false }
            let existed = Self.evaluate(timeline, at: time) != nil
            state.timelines[id] = timeline.filter { $0.at <= time } + [FakeScenario.Event(at: time, gone: true)]
            return existed
        }
    }

    // MARK: - Credentials

    /// The scenario credential a request's credential matches: every
    /// attribute the scenario lists has the same value in the request.
    public func match(_ credential: ProviderV1.Credential) -> FakeScenario.Credential? {
        scenario.credentials?.first { known in
            known.attributes.allSatisfy { credential.attributes[$0.key] == $0.value }
        }
    }

    /// Whether the cloud accepts `credential` now, and if not, why. Never
    /// says anything about the secret itself.
    public func verdict(for credential: ProviderV1.Credential) -> (valid: Bool, reason: String) {
        var name = credential.name
        if scenario.credentials != nil {
            guard let known = match(credential) else {
                return (false, "AuthFailure: the fake cloud does not know credential \"\(credential.name)\"")
            }
            guard known.valid else {
                return (false, known.reason.isEmpty ? "AuthFailure: credential \"\(known.name)\" is rejected" : known.reason)
            }
            name = known.name
        }
        if let fault = activeFaults(method: "ValidateCredential", credentialName: name).first(where: { $0.kind == .authFailure }) {
            return (false, fault.message.isEmpty ? "AuthFailure: credential \"\(name)\" was revoked" : fault.message)
        }
        return (true, "")
    }

    /// The scenario's name for a request's credential (its own name when the
    /// scenario lists no credentials).
    func scenarioName(of credential: ProviderV1.Credential?) -> String? {
        guard let credential else { return nil }
        guard scenario.credentials != nil else { return credential.name }
        return match(credential)?.name
    }

    // MARK: - Faults

    static func applies(_ fault: FakeScenario.Fault, method: String, credentialName: String?, at time: Duration) -> Bool {
        let methods = fault.methods.isEmpty ? (fault.kind == .crash ? ProviderV1.methodNames : cloudMethods) : fault.methods
        guard methods.contains(method) else { return false }
        if !fault.credential.isEmpty, fault.credential != credentialName { return false }
        let nanos = time.totalNanoseconds
        return nanos >= fault.fromNano && (fault.untilNano == 0 || nanos < fault.untilNano)
    }

    /// Faults active now for a call, in id order.
    public func activeFaults(method: String, credentialName: String?) -> [FakeScenario.Fault] {
        let time = now
        return state.withLockedValue { state in
            state.faults.sorted { $0.key < $1.key }.map(\.value).filter {
                Self.applies($0, method: method, credentialName: credentialName, at: time)
            }
        }
    }

    /// Adds a fault; returns its id.
    public func inject(_ fault: FakeScenario.Fault) -> UInt64 {
        state.withLockedValue { state in
            let id = state.nextFaultID
            state.nextFaultID += 1
            state.faults[id] = fault
            return id
        }
    }

    /// Removes the faults with these ids, or every fault when `ids` is empty.
    public func clearFaults(_ ids: [UInt64]) -> Int {
        state.withLockedValue { state in
            if ids.isEmpty {
                defer { state.faults.removeAll(); state.crashCounts.removeAll() }
                return state.faults.count
            }
            return ids.reduce(0) { cleared, id in cleared + (state.faults.removeValue(forKey: id) == nil ? 0 : 1) }
        }
    }

    // MARK: - Calls

    /// Records a call and returns whether a crash fault says the process
    /// must die now (this call is one past its `after_calls`).
    public func record(method: String, ids: [String], credentialName: String?) -> Bool {
        let time = now
        return state.withLockedValue { state in
            state.counts[method, default: 0] += 1
            var call = Call()
            call.method = method
            call.instanceIds = ids
            call.credential = credentialName ?? ""
            call.atNano = time.totalNanoseconds
            if state.calls.count < Self.callHistoryLimit {
                state.calls.append(call)
            } else {
                state.calls[state.callsStart] = call
                state.callsStart = (state.callsStart + 1) % Self.callHistoryLimit
            }
            var crash = false
            for (id, fault) in state.faults where fault.kind == .crash
                && Self.applies(fault, method: method, credentialName: credentialName, at: time) {
                let seen = state.crashCounts[id, default: 0] + 1
                state.crashCounts[id] = seen
                if seen > fault.afterCalls { crash = true }
            }
            return crash
        }
    }

    /// Calls per method, and the recent calls oldest first.
    public func calls(reset: Bool = false) -> (counts: [String: UInt64], calls: [Call]) {
        state.withLockedValue { state in
            let ordered = Array(state.calls[state.callsStart...] + state.calls[..<state.callsStart])
            let result = (state.counts, ordered)
            if reset {
                state.counts.removeAll()
                state.calls.removeAll()
                state.callsStart = 0
            }
            return result
        }
    }
}
