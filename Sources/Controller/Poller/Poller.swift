internal import Core
internal import Logging
public import ServiceLifecycle
internal import SwiftProtobuf

/// The instance poller (SPEC §6.2–6.3) as a swift-service-lifecycle
/// `Service`: keeps every machine's instance status and network interfaces
/// true to its cloud.
///
/// Each round it reads the events log (changes from outside, other
/// processes included), polls the machines that are due — grouped by
/// (provider, credential), at most `maxIDsPerCall` ids per call, one call in
/// flight per group, each batch behind the credential gate — writes each
/// batch's results in one transaction, and sleeps until the next machine is
/// due or the watch interval passes. A provider error never stops it.
public final class Poller: Service {
    private let engine: PollEngine

    /// - Throws: ``PollerConfig/Invalid`` naming the missing piece.
    public init(config: PollerConfig) throws(PollerConfig.Invalid) {
        try config.validate()
        engine = PollEngine(config: config)
    }

    /// Polls until cancelled or the service group shuts down gracefully
    /// (the round in progress finishes; the sleep is cut short).
    public func run() async throws {
        let engine = self.engine
        try await cancelWhenGracefulShutdown {
            try await engine.run()
        }
    }

    /// Runs one round now (for tests and the CLI's "poll now"): events, then
    /// every due machine. Returns the number of provider calls made.
    @discardableResult
    public func pollOnce() async throws -> Int {
        try await engine.round()
    }
}

/// A machine as the poll engine keeps it: no interfaces, only their hash
/// and whether they have addresses.
struct Tracked: Sendable {
    let id: String
    var provider: String
    var credential: String
    var instanceID: String
    var agentStatus: Machine.AgentStatus
    var instanceStatus: InstanceStatusRecord
    private(set) var interfacesHash: Int
    private(set) var hasAddresses: Bool
    var pollError: String?

    init(_ machine: Machine) {
        id = machine.id
        provider = machine.provider
        credential = machine.credential
        instanceID = machine.instanceID
        agentStatus = machine.agentStatus
        instanceStatus = machine.instanceStatus
        interfacesHash = machine.interfaces.hashValue
        hasAddresses = !machine.addresses.isEmpty
        pollError = machine.pollError
    }

    var isProvisioned: Bool { !instanceID.isEmpty }

    /// Records newly polled interfaces (kept as their hash).
    mutating func record(interfaces: [ProviderV1.NetworkInterface]) {
        interfacesHash = interfaces.hashValue
        hasAddresses = interfaces.contains { !$0.addresses.isEmpty || !$0.shadowAddresses.isEmpty }
    }
}

/// A (provider, credential) pair: the unit of batching, gating and throttling.
struct CredentialKey: Hashable, Sendable, CustomStringConvertible {
    var provider: String
    var credential: String
    var description: String { "\(provider)/\(credential)" }
}

actor PollEngine {
    let clock: any PollClock
    let store: any MachineStore
    let providers: any ProviderRouter
    let credentials: any CredentialAPI
    let logger: Logger
    let settings: PollSettings
    let watchInterval: Duration
    let metrics: ControllerMetrics?

    private var schedule: PollSchedule
    /// What scheduling needs of each machine; the polled interfaces are kept
    /// only as a hash (the store holds them), so 100 000 machines stay small.
    private var machines: [String: Tracked] = [:]
    private var revision: Int64 = 0
    private var loaded = false
    private let jitterSeed: UInt64
    /// Throttled (provider, credential) pairs and until when.
    private var pausedUntil: [CredentialKey: Timestamp] = [:]
    /// Providers whose shim was found down (logged once until it answers).
    private var shimDown: Set<String> = []
    /// How soon a pair whose shim is down is tried again.
    static let shimDownRetry: Duration = .seconds(1)
    /// Credentials the gate found invalid, until they change.
    private var invalid: [CredentialKey: String] = [:]

    init(config: PollerConfig) {
        clock = config.clock!
        store = config.store!
        providers = config.providers!
        credentials = config.credentials!
        logger = config.logger!
        settings = config.settings
        watchInterval = config.watchInterval
        metrics = config.metrics
        jitterSeed = config.jitterSeed
        schedule = PollSchedule(settings: config.settings, seed: config.jitterSeed)
    }

    func run() async throws {
        while !Task.isCancelled {
            do {
                try await round()
            } catch is CancellationError {
                break
            } catch {
                // Errors never kill the poller: log and try again next round.
                logger.error("poll round failed", metadata: ["error": "\(error)"])
            }
            let now = clock.now
            var wake = now + watchInterval
            if let next = schedule.nextDue, next < wake { wake = max(next, now) }
            do {
                try await clock.sleep(until: wake)
            } catch {
                break
            }
        }
    }

    /// One round; returns the provider calls made.
    @discardableResult
    func round() async throws -> Int {
        if !loaded { try await load() }
        try await readEvents()
        return try await pollDue()
    }

    // MARK: - Loading and events

    private func load() async throws {
        let now = clock.now
        revision = try await store.latestRevision()
        let saved = try await store.schedule()
        schedule = PollSchedule(settings: settings, seed: jitterSeed, resuming: saved)
        var removing: [String] = []
        let all = try await store.machines()
        for machine in all { machines[machine.id] = Tracked(machine) }
        for entry in saved where machines[entry.machineID] == nil { removing.append(entry.machineID); schedule.untrack(entry.machineID) }
        for machine in all { try await consider(machine, now: now, changed: false) }
        try await store.saveSchedule(Array(schedule.entries.values), removing: removing)
        loaded = true
        logger.info("poller started", metadata: ["machines": "\(all.count)", "resumed": "\(saved.count - removing.count)"])
    }

    /// Decides what a machine needs now: dead → forget; manual → mark
    /// running; otherwise make sure it is scheduled (reset when `changed`).
    private func consider(_ machine: Machine, now: Timestamp, changed: Bool) async throws {
        if machine.life == .dead {
            forget(machine.id)
            return
        }
        if machine.manual {
            schedule.untrack(machine.id)
            if machine.instanceStatus.state != .running || machine.instanceStatus.message != Self.manualMessage {
                let status = InstanceStatusRecord(state: .running, rawStatus: "running", message: Self.manualMessage, updatedAt: now)
                try await store.setInstanceStatus(machineID: machine.id, status)
                machines[machine.id]?.instanceStatus = status
            }
            return
        }
        if changed, schedule.entry(machine.id) != nil {
            schedule.resetToShort(machine.id, now: now)
        } else {
            schedule.track(machine.id, now: now)
        }
    }

    static let manualMessage = "Manually provisioned machine"

    private func forget(_ machineID: String) {
        schedule.untrack(machineID)
        machines.removeValue(forKey: machineID)
    }

    private func readEvents() async throws {
        while true {
            let events = try await store.events(after: revision, limit: 1000)
            guard let last = events.last else { return }
            revision = last.revision
            let now = clock.now
            var touched: [String] = []
            var removed: [String] = []
            for event in events where event.source == .external {
                switch event.kind {
                case .machineAdded, .machineChanged:
                    guard let machine = try await store.machine(id: event.machineID) else {
                        forget(event.machineID)
                        removed.append(event.machineID)
                        continue
                    }
                    let isNew = machines[machine.id] == nil
                    machines[machine.id] = Tracked(machine)
                    try await consider(machine, now: now, changed: !isNew)
                    if schedule.entry(machine.id) != nil { touched.append(machine.id) } else { removed.append(machine.id) }
                case .machineRemoved:
                    forget(event.machineID)
                    removed.append(event.machineID)
                case .credentialSet:
                    try await credentialChanged(event.credential, now: now)
                case .machinePolled, .credentialInvalidated:
                    break
                }
            }
            let entries = touched.compactMap { schedule.entry($0) }
            if !entries.isEmpty || !removed.isEmpty {
                try await store.saveSchedule(entries, removing: removed)
            }
            if events.count < 1000 { return }
        }
    }

    /// An updated credential: forget the gate's verdict, so the next batch
    /// validates it, and poll its paused machines at once.
    private func credentialChanged(_ name: String, now: Timestamp) async throws {
        let parts = name.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return }
        let key = CredentialKey(provider: parts[0], credential: parts[1])
        invalid.removeValue(forKey: key)
        for machine in machines.values where machine.provider == key.provider && machine.credential == key.credential {
            if machine.pollError?.hasPrefix("credential invalid") == true {
                schedule.resetToShort(machine.id, now: now)
                schedule.makeDue(machine.id, at: now)
            }
        }
        logger.info("credential updated", metadata: ["credential": "\(key)"])
    }

    // MARK: - Polling

    private func pollDue() async throws -> Int {
        let now = clock.now
        let due = schedule.due(at: now)
        guard !due.isEmpty else { return 0 }
        // Ids, not copies of the records: at 100 000 machines a sweep would
        // otherwise hold a second copy of every record.
        var groups: [CredentialKey: [String]] = [:]
        var bumped: [ScheduleEntry] = []
        for id in due {
            guard let machine = machines[id] else { schedule.untrack(id); continue }
            guard machine.isProvisioned else {
                // No instance id yet: bump and skip.
                if let entry = schedule.bump(id, now: now) { bumped.append(entry) }
                continue
            }
            groups[CredentialKey(provider: machine.provider, credential: machine.credential), default: []].append(id)
        }
        if !bumped.isEmpty { try await store.saveSchedule(bumped, removing: []) }
        fillBatches(&groups, now: now)

        // One task per (provider, credential); batches within one run in
        // order, so at most one call is in flight per pair.
        return try await withThrowingTaskGroup(of: Int.self) { group in
            for (key, members) in groups {
                if let until = pausedUntil[key], until > now { continue }  // throttled: not bumped
                group.addTask { try await self.poll(key, members) }
            }
            var calls = 0
            for try await made in group { calls += made }
            if let metrics {
                let counts = schedule.groupCounts
                metrics.machines(short: counts.short, long: counts.long)
            }
            return calls
        }
    }

    /// Fills each pair's last batch with the long-group machines of that
    /// pair that come due soonest within the jitter window (polled a little
    /// early). Jitter spreads a fleet's sweep over that window; without
    /// this, the sweep would go out as many small calls instead of
    /// ceil(N / max ids) full ones. Short-group machines are never pulled
    /// early: their backoff is the schedule.
    private func fillBatches(_ groups: inout [CredentialKey: [String]], now: Timestamp) {
        let horizon = now + settings.longPoll * settings.longPollJitter
        guard horizon > now else { return }
        var room: [CredentialKey: Int] = [:]
        for (key, members) in groups {
            let free = (settings.maxIDsPerCall - members.count % settings.maxIDsPerCall) % settings.maxIDsPerCall
            if free > 0, pausedUntil[key].map({ $0 <= now }) ?? true { room[key] = free }
        }
        guard !room.isEmpty else { return }
        var upcoming: [CredentialKey: [(due: Timestamp, id: String)]] = [:]
        for entry in schedule.entries.values where entry.group == .long && entry.due > now && entry.due <= horizon {
            guard let machine = machines[entry.machineID], machine.isProvisioned else { continue }
            let key = CredentialKey(provider: machine.provider, credential: machine.credential)
            if room[key] != nil { upcoming[key, default: []].append((entry.due, entry.machineID)) }
        }
        for (key, candidates) in upcoming {
            let soonest = candidates.sorted { ($0.due, $0.id) < ($1.due, $1.id) }.prefix(room[key] ?? 0)
            groups[key, default: []].append(contentsOf: soonest.map(\.id))
        }
    }

    private func poll(_ key: CredentialKey, _ members: [String]) async throws -> Int {
        var calls = 0
        var start = 0
        while start < members.count {
            let ids = members[start..<min(start + settings.maxIDsPerCall, members.count)]
            start += ids.count
            // The records as they are now (a machine removed meanwhile drops out).
            let batch = ids.compactMap { machines[$0] }
            guard !batch.isEmpty else { continue }
            let outcome = try await pollBatch(key, batch)
            metrics?.batchPolled(provider: key.provider, size: batch.count, result: outcome.result)
            calls += outcome.calls
            if outcome.stop { break }
        }
        return calls
    }

    private struct BatchOutcome {
        var calls: Int
        /// Stop this pair's remaining batches (throttled or credential invalid).
        var stop: Bool
        /// For the metrics: ok, error, credential_invalid, throttled, shim_down.
        var result: String
    }

    private func pollBatch(_ key: CredentialKey, _ batch: [Tracked]) async throws -> BatchOutcome {
        let now = clock.now
        guard let endpoint = providers.endpoint(for: key.provider) else {
            try await fail(batch, "provider \(key.provider) is not configured", now: now)
            return BatchOutcome(calls: 0, stop: true, result: "error")
        }
        // The credential gate: exists, not marked invalid, not expired, and
        // the shim says it is usable.
        let credential: ProviderV1.Credential
        var calls = 0
        do {
            switch try await gate(key, endpoint: endpoint, now: now) {
            case .usable(let usable, let validateCalls):
                credential = usable
                calls += validateCalls
            case .refused(let reason, let validateCalls):
                logger.debug("batch refused by the credential gate", metadata: ["credential": "\(key)", "machines": "\(batch.count)"])
                try await fail(batch, "credential invalid: \(reason)", now: now)
                return BatchOutcome(calls: validateCalls, stop: true, result: "credential_invalid")
            }
        } catch let error as CancellationError {
            throw error
        } catch let error as StoreError {
            throw error
        } catch {
            return try await handleCallError(calls: 1, error, key: key, batch: batch, method: "ValidateCredential", now: now)
        }

        let ids = batch.map(\.instanceID)
        logger.debug("polling a batch", metadata: ["credential": "\(key)", "machines": "\(ids.count)"])
        let instances: [ProviderV1.InstanceResult]
        do {
            calls += 1
            instances = try await measured(key, "Instances") { try await endpoint.access.instances(ids, cloud: endpoint.cloud, credential: credential) }
        } catch {
            return try await handleCallError(calls: calls, error, key: key, batch: batch, method: "Instances", now: now)
        }
        let foundIDs = instances.filter(\.found).map(\.instanceID)
        var interfacesByID: [String: ProviderV1.InstanceInterfaces] = [:]
        if !foundIDs.isEmpty {
            do {
                calls += 1
                for result in try await measured(key, "NetworkInterfaces", { try await endpoint.access.networkInterfaces(foundIDs, cloud: endpoint.cloud, credential: credential) }) {
                    interfacesByID[result.instanceID] = result
                }
            } catch {
                return try await handleCallError(calls: calls, error, key: key, batch: batch, method: "NetworkInterfaces", now: now)
            }
        }

        let written = clock.now
        var results: [PollResult] = []
        var entries: [ScheduleEntry] = []
        for (machine, instance) in zip(batch, instances) {
            guard machines[machine.id] != nil else { continue }  // removed meanwhile
            var result = PollResult(machineID: machine.id)
            var observation = PollSchedule.Observation(state: nil, hasAddresses: machine.hasAddresses, agentStarted: machine.agentStatus == .none || machine.agentStatus == .started)
            if instance.found {
                let status = InstanceStatusRecord(state: instance.status.state, rawStatus: instance.status.rawStatus, message: instance.status.message, updatedAt: written)
                if !status.sameReport(as: machine.instanceStatus) { result.instanceStatus = status }
                observation.state = instance.status.state
                if let interfaces = interfacesByID[machine.instanceID], interfaces.found {
                    if interfaces.interfaces.hashValue != machine.interfacesHash { result.interfaces = interfaces.interfaces }
                    observation.hasAddresses = interfaces.interfaces.contains { !$0.addresses.isEmpty || !$0.shadowAddresses.isEmpty }
                }
            } else {
                observation.hasAddresses = false
            }
            if let status = result.instanceStatus { machines[machine.id]?.instanceStatus = status }
            if let interfaces = result.interfaces { machines[machine.id]?.record(interfaces: interfaces) }
            machines[machine.id]?.pollError = nil
            results.append(result)
            if let entry = schedule.record(machine.id, observation, now: written) { entries.append(entry) }
        }
        try await store.applyPoll(results, schedule: entries)
        logger.debug("batch polled", metadata: ["credential": "\(key)", "machines": "\(results.count)"])
        if shimDown.remove(key.provider) != nil {
            logger.notice("provider available again", metadata: ["provider": "\(key.provider)"])
        }
        return BatchOutcome(calls: calls, stop: false, result: "ok")
    }

    /// Runs one provider call, counting it and its latency by result.
    private func measured<T>(_ key: CredentialKey, _ method: String, _ call: () async throws -> T) async throws -> T {
        guard let metrics else { return try await call() }
        let start = ContinuousClock.now
        do {
            let answer = try await call()
            metrics.providerCall(provider: key.provider, method: method, result: "ok", duration: .now - start)
            return answer
        } catch {
            let result = error is ShimUnavailable ? "shim_down" : Self.resultName(RPCError(from: error).code)
            metrics.providerCall(provider: key.provider, method: method, result: result, duration: .now - start)
            throw error
        }
    }

    /// "resource_exhausted" for ResourceExhausted, and so on.
    static func resultName(_ code: RPCStatusCode) -> String {
        var name = ""
        for character in "\(code)" {
            if character.isUppercase, !name.isEmpty { name += "_" }
            name += character.lowercased()
        }
        return name
    }

    private enum GateVerdict {
        case usable(ProviderV1.Credential, calls: Int)
        case refused(String, calls: Int)
    }

    private func gate(_ key: CredentialKey, endpoint: ProviderEndpoint, now: Timestamp) async throws -> GateVerdict {
        if let reason = invalid[key] { return .refused(reason, calls: 0) }
        guard let stored = try await credentials.credential(provider: key.provider, name: key.credential) else {
            return .refused("credential \(key) does not exist", calls: 0)
        }
        if let reason = stored.invalidReason {
            invalid[key] = reason
            return .refused(reason, calls: 0)
        }
        if let expiry = stored.expiresAt, expiry <= now {
            invalid[key] = "expired at \(expiry)"
            return .refused("expired at \(expiry)", calls: 0)
        }
        let credential = stored.wire
        let verdict: ProviderV1.ValidateCredentialResponse
        do {
            verdict = try await measured(key, "ValidateCredential") { try await endpoint.access.validateCredential(credential, cloud: endpoint.cloud) }
        } catch let error as RPCError where error.code == .unauthenticated || error.code == .permissionDenied {
            try await invalidate(key, reason: error.message)
            return .refused(error.message, calls: 1)
        }
        guard verdict.valid else {
            try await invalidate(key, reason: verdict.reason)
            return .refused(verdict.reason, calls: 1)
        }
        metrics?.credential(provider: key.provider, name: key.credential, valid: true)
        return .usable(credential, calls: 1)
    }

    private func invalidate(_ key: CredentialKey, reason: String) async throws {
        invalid[key] = reason
        metrics?.credential(provider: key.provider, name: key.credential, valid: false)
        try await credentials.invalidate(provider: key.provider, name: key.credential, reason: reason)
        logger.warning("credential invalidated", metadata: ["credential": "\(key)", "reason": "\(reason)"])
    }

    /// What a failed cloud call means for the batch and the pair.
    private func handleCallError(calls: Int, _ error: any Error, key: CredentialKey, batch: [Tracked], method: String, now: Timestamp) async throws -> BatchOutcome {
        if error is CancellationError { throw error }
        if let down = error as? ShimUnavailable {
            // Not the cloud's answer: the machines keep their schedule (still
            // due) and are polled once the shim is back.
            pausedUntil[key] = now + min(settings.shortPoll, Self.shimDownRetry)
            if down.starting {
                logger.debug("waiting for the provider's shim to start", metadata: ["provider": "\(key.provider)"])
            } else if !shimDown.contains(key.provider) {
                shimDown.insert(key.provider)
                logger.warning("provider unavailable; machines keep their schedule", metadata: ["provider": "\(key.provider)", "why": "\(down.reason)"])
            } else {
                logger.debug("provider still unavailable", metadata: ["provider": "\(key.provider)", "why": "\(down.reason)"])
            }
            return BatchOutcome(calls: calls, stop: true, result: "shim_down")
        }
        let rpc = RPCError(from: error)
        switch rpc.code {
        case .unauthenticated, .permissionDenied:
            try await invalidate(key, reason: rpc.message)
            try await fail(batch, "credential invalid: \(rpc.message)", now: now)
            return BatchOutcome(calls: calls, stop: true, result: "credential_invalid")
        case .resourceExhausted:
            // Throttled: give the cloud room; the machines' own backoff stays.
            let pause = rpc.retryAfter ?? settings.shortPollCap
            pausedUntil[key] = now + pause
            logger.notice("throttled", metadata: ["credential": "\(key)", "method": "\(method)", "pause": "\(pause)"])
            return BatchOutcome(calls: calls, stop: true, result: "throttled")
        default:
            logger.warning("provider call failed", metadata: ["credential": "\(key)", "method": "\(method)", "error": "\(rpc)"])
            try await fail(batch, "\(method) failed: \(rpc)", now: now)
            return BatchOutcome(calls: calls, stop: false, result: "error")
        }
    }

    /// Records an error on every machine of a batch and bumps them.
    private func fail(_ batch: [Tracked], _ message: String, now: Timestamp) async throws {
        var results: [PollResult] = []
        var entries: [ScheduleEntry] = []
        for machine in batch where machines[machine.id] != nil {
            machines[machine.id]?.pollError = message
            results.append(PollResult(machineID: machine.id, pollError: message))
            if let entry = schedule.bump(machine.id, now: now) { entries.append(entry) }
        }
        try await store.applyPoll(results, schedule: entries)
    }
}
