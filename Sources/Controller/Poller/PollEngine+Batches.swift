internal import Core
internal import Logging
internal import SwiftProtobuf

/// Polling the due machines: each pair's batches (at most max ids per
/// call, one call in flight per pair), the calls behind the credential gate
/// (`PollEngine+CredentialGate.swift`), and writing each batch's results
/// before they are remembered. A failed batch goes to the failure policy
/// (`PollEngine+Failures.swift`).
extension PollEngine {
    func pollDue() async throws -> Int {
        let now = clock.now
        // Ids, not copies of the records: at 100 000 machines a sweep would
        // otherwise hold a second copy of every record.
        var groups: [CredentialKey: [String]] = [:]
        var bumped: [CredentialKey: [ScheduleEntry]] = [:]
        for key in Array(schedules.keys) where !isPaused(key, at: now) && !inFlight.contains(key) && mayPoll(key) {
            guard let next = schedules[key]?.nextDue, next <= now else { continue }
            withSchedule(key) { schedule in
                for id in schedule.due(at: now) {
                    guard let machine = machines[id], machine.key == key else {
                        schedule.untrack(id)
                        continue
                    }
                    if machine.isProvisioned {
                        groups[key, default: []].append(id)
                    } else if let entry = schedule.nextBump(id, now: now) {
                        // No instance id yet: bump and skip.
                        bumped[key, default: []].append(entry)
                    }
                }
            }
        }
        if !bumped.isEmpty {
            try await store.saveSchedule(bumped.values.flatMap { $0 }, removing: [])
            for (key, entries) in bumped { schedules[key]?.commit(entries) }
        }
        guard !groups.isEmpty else { return 0 }
        fillBatches(&groups, now: now)

        // One task per pair; batches within one run in order, and the pair
        // counts as in flight until they are done.
        for key in groups.keys { inFlight.insert(key) }
        return try await withThrowingTaskGroup(of: Int.self) { group in
            for (key, members) in groups {
                group.addTask { try await self.poll(key, members) }
            }
            var calls = 0
            for try await made in group { calls += made }
            if let metrics {
                var short = 0
                var long = 0
                for schedule in schedules.values {
                    let counts = schedule.groupCounts
                    short += counts.short
                    long += counts.long
                }
                metrics.machines(short: short, long: long)
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
        for (key, members) in groups {
            let settings = settings(for: key)
            let horizon = now + settings.longPoll * settings.longPollJitter
            guard horizon > now else { continue }
            let room = (settings.maxIDsPerCall - members.count % settings.maxIDsPerCall) % settings.maxIDsPerCall
            guard room > 0, let schedule = schedules[key] else { continue }
            var upcoming: [(due: Timestamp, id: String)] = []
            for entry in schedule.entries.values where entry.group == .long && entry.due > now && entry.due <= horizon {
                if machines[entry.machineID]?.isProvisioned == true { upcoming.append((entry.due, entry.machineID)) }
            }
            let soonest = upcoming.sorted { ($0.due, $0.id) < ($1.due, $1.id) }.prefix(room)
            groups[key, default: []].append(contentsOf: soonest.map(\.id))
        }
    }

    /// Polls one pair's machines, batch after batch: the calls of a batch
    /// go out while the previous batch's results are being written (one
    /// call and one write in flight at most), so a sweep costs the calls or
    /// the writes, whichever is slower, not both.
    private func poll(_ key: CredentialKey, _ members: [String]) async throws -> Int {
        ownership?.begin(key)
        defer {
            inFlight.remove(key)
            ownership?.end(key)
        }
        return try await withThrowingTaskGroup(of: Written.self) { writes in
            var calls = 0
            var start = 0
            /// Once the gate refuses (or the provider is not configured),
            /// the rest get the same error without a call.
            var refusal: String?
            var writing = false
            let perCall = settings(for: key).maxIDsPerCall
            batches: while start < members.count {
                let ids = members[start..<min(start + perCall, members.count)]
                start += ids.count
                // The records as they are now (a machine removed or moved
                // meanwhile drops out).
                let batch = ids.compactMap { machines[$0] }.filter { $0.key == key }
                guard !batch.isEmpty else { continue }
                // No call once the pair's lease may have run out (or was
                // handed back): another controller may hold it by now.
                let fence = ownership?.fence(for: key)
                if ownership != nil && fence == nil { break }
                let step: Step
                do {
                    if let refusal {
                        try await fail(key, batch, refusal, now: clock.now, fence: fence)
                        step = .done(BatchOutcome(calls: 0, next: .go, result: "credential_invalid"))
                    } else {
                        step = try await traced(key, machines: batch.count, result: \.result) { try await fetch(key, batch, fence: fence) }
                    }
                } catch let error as CancellationError {
                    throw error
                } catch {
                    storeFailed(key, batch, error, fence: fence)
                    break
                }
                heartbeat.progressed(at: clock.now)
                // The previous batch's write ends before this one's begins.
                if writing {
                    writing = false
                    if let written = try await writes.next(), !settle(key, written) { break }
                }
                switch step {
                case .done(let outcome):
                    metrics?.batchPolled(provider: key.provider, size: batch.count, result: outcome.result)
                    calls += outcome.calls
                    switch outcome.next {
                    case .go: continue
                    case .stop: break batches
                    case .fail(let message): refusal = message
                    }
                case .answered(let answers):
                    calls += answers.calls
                    let (results, entries) = plan(key, batch, answers)
                    let store = self.store
                    writes.addTask {
                        do {
                            return Written(
                                batch: batch, results: results, entries: entries, fence: fence,
                                events: .success(try await store.applyPoll(results, schedule: entries, fence: fence)))
                        } catch {
                            return Written(batch: batch, results: results, entries: entries, fence: fence, events: .failure(error))
                        }
                    }
                    writing = true
                }
            }
            if writing, let written = try await writes.next() { _ = settle(key, written) }
            return calls
        }
    }

    struct BatchOutcome {
        var calls: Int
        /// What the pair's remaining batches do.
        var next: FailureDecision.Rest
        /// For the metrics: ok, error, credential_invalid, throttled, shim_down.
        var result: String
    }

    /// What the calls of a batch came to.
    private enum Step {
        /// The provider answered: the results are to be written.
        case answered(Answers)
        /// Nothing to write for it any more (an error was recorded, or the
        /// pair is paused).
        case done(BatchOutcome)

        /// For the batch's span: ok when answered.
        var result: String {
            switch self {
            case .answered: "ok"
            case .done(let outcome): outcome.result
            }
        }
    }

    private struct Answers {
        var calls: Int
        var instances: [ProviderV1.InstanceResult]
        var interfaces: [String: ProviderV1.InstanceInterfaces]
        var at: Timestamp
    }

    /// A batch's write, as it ended.
    private struct Written: Sendable {
        var batch: [TrackedMachine]
        var results: [PollResult]
        var entries: [ScheduleEntry]
        var fence: LeaseFence?
        var events: Result<[MachineEvent], any Error>
    }

    /// The gate and the calls for one batch.
    private func fetch(_ key: CredentialKey, _ batch: [TrackedMachine], fence: LeaseFence?) async throws -> Step {
        let now = clock.now
        guard let endpoint = providers.endpoint(for: key.provider) else {
            return .done(try await handle(.notConfigured(provider: key.provider), key, batch, calls: 0, now: now, fence: fence))
        }
        let credential: ProviderV1.Credential
        var calls: Int
        switch try await gate(key, endpoint: endpoint, now: now) {
        case .usable(let usable, let validateCalls):
            credential = usable
            calls = validateCalls
        case .refused(let failure, let validateCalls):
            return .done(try await handle(failure, key, batch, calls: validateCalls, now: now, fence: fence))
        }

        let ids = batch.map(\.instanceID)
        // The gate may have taken a while: no call once the lease may
        // have run out (another controller may be polling the pair).
        if ownership != nil, !mayPoll(key) {
            return .done(BatchOutcome(calls: calls, next: .stop, result: "lease_lost"))
        }
        logger.debug("polling a batch", metadata: ["credential": "\(key)", "machines": "\(ids.count)"])
        let instances: [ProviderV1.InstanceResult]
        do {
            calls += 1
            instances = try await measured(key, "Instances") { try await endpoint.access.instances(ids, cloud: endpoint.cloud, credential: credential) }
        } catch {
            return .done(try await handle(Self.failure(error, method: "Instances"), key, batch, calls: calls, now: now, fence: fence))
        }
        // Matched to the machines by place (see CloudAccess): an answer
        // that does not align cannot be.
        if let problem = ProviderV1.InstanceResult.misalignment(instances, asked: ids) {
            return .done(try await handle(.misaligned(method: "Instances", problem: problem), key, batch, calls: calls, now: now, fence: fence))
        }
        let foundIDs = instances.filter(\.found).map(\.instanceID)
        var interfacesByID: [String: ProviderV1.InstanceInterfaces] = [:]
        // Paused past the lease during the first call: no second call, but
        // what was answered goes to the store, whose fence decides.
        if !foundIDs.isEmpty, mayPoll(key) {
            let interfaces: [ProviderV1.InstanceInterfaces]
            do {
                calls += 1
                interfaces = try await measured(key, "NetworkInterfaces") {
                    try await endpoint.access.networkInterfaces(foundIDs, cloud: endpoint.cloud, credential: credential)
                }
            } catch {
                return .done(try await handle(Self.failure(error, method: "NetworkInterfaces"), key, batch, calls: calls, now: now, fence: fence))
            }
            if let problem = ProviderV1.InstanceInterfaces.misalignment(interfaces, asked: foundIDs) {
                return .done(try await handle(.misaligned(method: "NetworkInterfaces", problem: problem), key, batch, calls: calls, now: now, fence: fence))
            }
            for result in interfaces { interfacesByID[result.instanceID] = result }
        }
        return .answered(Answers(calls: calls, instances: instances, interfaces: interfacesByID, at: clock.now))
    }

    /// What to write for a batch's answers, and where its machines go next
    /// (nothing is remembered yet).
    private func plan(_ key: CredentialKey, _ batch: [TrackedMachine], _ answers: Answers) -> ([PollResult], [ScheduleEntry]) {
        var results: [PollResult] = []
        var entries: [ScheduleEntry] = []
        for (polled, instance) in zip(batch, answers.instances) {
            // Removed, moved to another pair or given another instance id
            // while the calls ran: this answer is not about it any more.
            guard let machine = machines[polled.id], machine.key == key, machine.instanceID == polled.instanceID else { continue }
            var result = PollResult(machineID: machine.id)
            var observation = PollSchedule.Observation(state: nil, hasAddresses: false, agentStarted: machine.agentStarted)
            if instance.found {
                let status = InstanceStatusRecord(
                    state: instance.status.state, rawStatus: instance.status.rawStatus, message: instance.status.message, updatedAt: answers.at)
                if !status.sameReport(as: machine.instanceStatus) { result.instanceStatus = status }
                observation.state = instance.status.state
                observation.hasAddresses = machine.hasAddresses
                if let interfaces = answers.interfaces[machine.instanceID], interfaces.found {
                    if interfaces.interfaces.hashValue != machine.interfacesHash { result.interfaces = interfaces.interfaces }
                    observation.hasAddresses = TrackedMachine.hasAddresses(interfaces.interfaces)
                }
                if instance.status.state == .provisioningError {
                    // Juju sets the machine's status: the agent is in error
                    // with the provider's message (written only if it is news).
                    result.agentError = instance.status.message.isEmpty ? instance.status.rawStatus : instance.status.message
                }
            } else {
                // Vanished, or never there: say so once, clear the interfaces.
                let status = InstanceStatusRecord.notFound(at: answers.at)
                if !status.sameReport(as: machine.instanceStatus) { result.instanceStatus = status }
                if machine.interfacesHash != Self.noInterfacesHash { result.interfaces = [] }
            }
            results.append(result)
            if let entry = schedules[key]?.nextEntry(machine.id, after: observation, now: answers.at) { entries.append(entry) }
        }
        return (results, entries)
    }

    /// A batch's write has ended: written, it is remembered; failed, the
    /// pair pauses and nothing of it is remembered, so that the next poll
    /// writes the same answer again. Returns whether it was written.
    private func settle(_ key: CredentialKey, _ written: Written) -> Bool {
        switch written.events {
        case .failure(let error):
            storeFailed(key, written.batch, error, fence: written.fence)
            return false
        case .success(let events):
            for result in written.results { machines[result.machineID]?.remember(result) }
            schedules[key]?.commit(written.entries)
            logChanges(events)
            // Before the line that says so (a test waits for it).
            metrics?.pollSucceeded(provider: key.provider, at: clock.now)
            logger.debug("batch polled", metadata: ["credential": "\(key)", "machines": "\(written.results.count)"])
            retries.removeValue(forKey: key)
            metrics?.batchPolled(provider: key.provider, size: written.batch.count, result: "ok")
            if shimDown.remove(key.provider) != nil {
                logger.notice("provider available again", metadata: ["provider": "\(key.provider)"])
            }
            return true
        }
    }

    static var noInterfacesHash: Int { [ProviderV1.NetworkInterface]().hashValue }

    /// Status and address changes at info, as Juju logs them.
    private func logChanges(_ events: [MachineEvent]) {
        guard logger.logLevel <= .info else { return }
        for event in events {
            let metadata: Logger.Metadata = ["machine": "\(event.machineID)", "instance": "\(machines[event.machineID]?.instanceID ?? "")"]
            switch event.kind {
            case .instanceStatusChanged:
                logger.info("instance status changed from \(event.oldValue) to \(event.newValue)", metadata: metadata)
            case .addressesChanged:
                logger.info("machine has new addresses", metadata: metadata.merging(["addresses": "\(event.newValue)"]) { $1 })
            case .agentStatusChanged:
                logger.info("agent status set from the provider", metadata: metadata.merging(["from": "\(event.oldValue)", "to": "\(event.newValue)"]) { $1 })
            default:
                break
            }
        }
    }

    /// Runs one provider call, counting it and its latency by result.
    func measured<T>(_ key: CredentialKey, _ method: String, _ call: () async throws -> T) async throws -> T {
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

    /// Records an error on every machine of a batch and bumps them: written
    /// first, then remembered.
    func fail(_ key: CredentialKey, _ batch: [TrackedMachine], _ message: String, now: Timestamp, fence: LeaseFence?) async throws {
        var results: [PollResult] = []
        var entries: [ScheduleEntry] = []
        for machine in batch where machines[machine.id]?.key == key {
            results.append(PollResult(machineID: machine.id, pollError: message))
            if let entry = schedules[key]?.nextBump(machine.id, now: now) { entries.append(entry) }
        }
        try await store.applyPoll(results, schedule: entries, fence: fence)
        for result in results { machines[result.machineID]?.remember(result) }
        schedules[key]?.commit(entries)
        // Written, and the shim (if any was asked) answered: no more retries.
        retries.removeValue(forKey: key)
    }
}
