internal import Core
internal import Logging
internal import SwiftProtobuf

/// Polling the due machines: batches per (provider, credential), the
/// credential gate, and what each answer or failure means (README, "The
/// poll engine").
extension PollEngine {
    func pollDue() async throws -> Int {
        let now = clock.now
        // Ids, not copies of the records: at 100 000 machines a sweep would
        // otherwise hold a second copy of every record.
        var groups: [CredentialKey: [String]] = [:]
        var bumped: [CredentialKey: [ScheduleEntry]] = [:]
        for key in Array(schedules.keys) where !isPaused(key, at: now) && !inFlight.contains(key) {
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
        let horizon = now + settings.longPoll * settings.longPollJitter
        guard horizon > now else { return }
        for (key, members) in groups {
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
        defer { inFlight.remove(key) }
        return try await withThrowingTaskGroup(of: Written.self) { writes in
            var calls = 0
            var start = 0
            /// Once the gate refuses (or the provider is not configured),
            /// the rest get the same error without a call.
            var refusal: String?
            var writing = false
            batches: while start < members.count {
                let ids = members[start..<min(start + settings.maxIDsPerCall, members.count)]
                start += ids.count
                // The records as they are now (a machine removed or moved
                // meanwhile drops out).
                let batch = ids.compactMap { machines[$0] }.filter { $0.key == key }
                guard !batch.isEmpty else { continue }
                let step: Step
                do {
                    if let refusal {
                        try await fail(key, batch, refusal, now: clock.now)
                        step = .done(BatchOutcome(calls: 0, next: .go, result: "credential_invalid"))
                    } else {
                        step = try await fetch(key, batch)
                    }
                } catch let error as CancellationError {
                    throw error
                } catch {
                    storeFailed(key, batch, error)
                    break
                }
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
                    case .failRest(let message): refusal = message
                    }
                case .answered(let answers):
                    calls += answers.calls
                    let (results, entries) = plan(key, batch, answers)
                    let store = self.store
                    writes.addTask {
                        do {
                            return Written(batch: batch, results: results, entries: entries, events: .success(try await store.applyPoll(results, schedule: entries)))
                        } catch {
                            return Written(batch: batch, results: results, entries: entries, events: .failure(error))
                        }
                    }
                    writing = true
                }
            }
            if writing, let written = try await writes.next() { _ = settle(key, written) }
            return calls
        }
    }

    private struct BatchOutcome {
        enum Next {
            /// On to the pair's next batch.
            case go
            /// Stop the pair's remaining batches (throttled, shim down):
            /// they stay due and are polled when the pause ends.
            case stop
            /// The remaining batches fail with this error, without a call.
            case failRest(String)
        }

        var calls: Int
        var next: Next
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
        var events: Result<[MachineEvent], any Error>
    }

    /// The gate and the calls for one batch.
    private func fetch(_ key: CredentialKey, _ batch: [TrackedMachine]) async throws -> Step {
        let now = clock.now
        guard let endpoint = providers.endpoint(for: key.provider) else {
            let message = "provider \(key.provider) is not configured"
            try await fail(key, batch, message, now: now)
            return .done(BatchOutcome(calls: 0, next: .failRest(message), result: "error"))
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
                let message = "credential invalid: \(reason)"
                try await fail(key, batch, message, now: now)
                return .done(BatchOutcome(calls: validateCalls, next: .failRest(message), result: "credential_invalid"))
            }
        } catch let error as CancellationError {
            throw error
        } catch let error as StoreError {
            throw error
        } catch {
            return .done(try await handleCallError(calls: 1, error, key: key, batch: batch, method: "ValidateCredential", now: now))
        }

        let ids = batch.map(\.instanceID)
        logger.debug("polling a batch", metadata: ["credential": "\(key)", "machines": "\(ids.count)"])
        let instances: [ProviderV1.InstanceResult]
        do {
            calls += 1
            instances = try await measured(key, "Instances") { try await endpoint.access.instances(ids, cloud: endpoint.cloud, credential: credential) }
        } catch {
            return .done(try await handleCallError(calls: calls, error, key: key, batch: batch, method: "Instances", now: now))
        }
        // Matched to the machines by place (see CloudAccess): an answer
        // that does not align cannot be.
        if let problem = ProviderV1.InstanceResult.misalignment(instances, asked: ids) {
            return .done(try await misaligned(calls: calls, key: key, batch: batch, method: "Instances", problem: problem, now: now))
        }
        let foundIDs = instances.filter(\.found).map(\.instanceID)
        var interfacesByID: [String: ProviderV1.InstanceInterfaces] = [:]
        if !foundIDs.isEmpty {
            let interfaces: [ProviderV1.InstanceInterfaces]
            do {
                calls += 1
                interfaces = try await measured(key, "NetworkInterfaces") {
                    try await endpoint.access.networkInterfaces(foundIDs, cloud: endpoint.cloud, credential: credential)
                }
            } catch {
                return .done(try await handleCallError(calls: calls, error, key: key, batch: batch, method: "NetworkInterfaces", now: now))
            }
            if let problem = ProviderV1.InstanceInterfaces.misalignment(interfaces, asked: foundIDs) {
                return .done(try await misaligned(calls: calls, key: key, batch: batch, method: "NetworkInterfaces", problem: problem, now: now))
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
            storeFailed(key, written.batch, error)
            return false
        case .success(let events):
            for result in written.results { machines[result.machineID]?.remember(result) }
            schedules[key]?.commit(written.entries)
            logChanges(events)
            logger.debug("batch polled", metadata: ["credential": "\(key)", "machines": "\(written.results.count)"])
            retries.removeValue(forKey: key)
            metrics?.batchPolled(provider: key.provider, size: written.batch.count, result: "ok")
            if shimDown.remove(key.provider) != nil {
                logger.notice("provider available again", metadata: ["provider": "\(key.provider)"])
            }
            return true
        }
    }

    /// A write of the pair failed (the store is busy or full): pause it.
    private func storeFailed(_ key: CredentialKey, _ batch: [TrackedMachine], _ error: any Error) {
        let wait = pauseToRetry(key, .storeFailed, now: clock.now)
        logger.error(
            "could not write a batch's results; its machines are polled again shortly",
            metadata: ["credential": "\(key)", "machines": "\(batch.count)", "retry": "\(wait)", "error": "\(error)"])
        metrics?.batchPolled(provider: key.provider, size: batch.count, result: "store_error")
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
        guard let stored = try await credentials.credential(key) else {
            return .refused("credential \(key) does not exist", calls: 0)
        }
        if let reason = stored.invalidReason {
            invalid[key] = reason
            if rechecks[key] == nil { rechecks[key] = now + Self.credentialRecheck }
            return .refused(reason, calls: 0)
        }
        if let expiry = stored.expiresAt, expiry <= now {
            // Not re-checked: only setting it again helps.
            let reason = "expired at \(expiry.rfc3339)"
            invalid[key] = reason
            return .refused(reason, calls: 0)
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
        metrics?.credential(provider: key.provider, name: key.name, valid: true)
        return .usable(credential, calls: 1)
    }

    /// Marks the credential invalid: in the store first, then here; it is
    /// asked about again in ``credentialRecheck``.
    private func invalidate(_ key: CredentialKey, reason: String) async throws {
        try await credentials.invalidate(key, reason: reason)
        invalid[key] = reason
        rechecks[key] = clock.now + Self.credentialRecheck
        metrics?.credential(provider: key.provider, name: key.name, valid: false)
        logger.warning("credential invalidated", metadata: ["credential": "\(key)", "reason": "\(reason)"])
    }

    /// Asks the shims again about the invalid credentials whose re-check is
    /// due and whose machines wait (not while their pair is paused or has a
    /// batch in flight). One found valid has its mark cleared in the store
    /// first, then here, and its paused machines are polled in this round;
    /// one still invalid, or that could not be asked, is asked again in
    /// ``credentialRecheck``. Returns the calls made.
    func recheckInvalidCredentials() async throws -> Int {
        let now = clock.now
        var calls = 0
        for (key, at) in rechecks where at <= now {
            guard invalid[key] != nil, schedules[key] != nil, let endpoint = providers.endpoint(for: key.provider) else {
                // Nothing waits for it: forgotten, so that the next batch
                // reads the store's mark again (and asks for a re-check).
                rechecks.removeValue(forKey: key)
                invalid.removeValue(forKey: key)
                continue
            }
            if isPaused(key, at: now) || inFlight.contains(key) { continue }
            rechecks[key] = now + Self.credentialRecheck
            guard let stored = try await credentials.credential(key) else {
                // Gone: the gate says so on the next batch.
                invalid.removeValue(forKey: key)
                rechecks.removeValue(forKey: key)
                continue
            }
            if let expiry = stored.expiresAt, expiry <= now {
                rechecks.removeValue(forKey: key)
                continue
            }
            if stored.invalidReason != nil {
                let verdict: ProviderV1.ValidateCredentialResponse
                do {
                    calls += 1
                    verdict = try await measured(key, "ValidateCredential") {
                        try await endpoint.access.validateCredential(stored.wire, cloud: endpoint.cloud)
                    }
                } catch let error as CancellationError {
                    throw error
                } catch {
                    logger.debug("credential still invalid", metadata: ["credential": "\(key)", "error": "\(RPCError(from: error))"])
                    continue
                }
                guard verdict.valid else {
                    logger.debug("credential still invalid", metadata: ["credential": "\(key)", "reason": "\(verdict.reason)"])
                    continue
                }
                do {
                    try await credentials.clearInvalid(key)
                } catch let error as CancellationError {
                    throw error
                } catch {
                    // Not remembered: asked again at the next re-check.
                    logger.error("could not clear a credential's invalid mark", metadata: ["credential": "\(key)", "error": "\(error)"])
                    continue
                }
            }
            credentialUsable(key, now: now)
            metrics?.credential(provider: key.provider, name: key.name, valid: true)
            logger.info("credential valid again", metadata: ["credential": "\(key)"])
        }
        return calls
    }

    /// What a failed cloud call means for the batch and the pair.
    private func handleCallError(
        calls: Int, _ error: any Error, key: CredentialKey, batch: [TrackedMachine], method: String, now: Timestamp
    ) async throws -> BatchOutcome {
        if error is CancellationError { throw error }
        if let down = error as? ShimUnavailable {
            // Not the cloud's answer: the machines keep their schedule (still
            // due) and are polled once the shim is back.
            pauseToRetry(key, .shimDown, now: now)
            if down.starting {
                logger.debug("waiting for the provider's shim to start", metadata: ["provider": "\(key.provider)"])
            } else if !shimDown.contains(key.provider) {
                shimDown.insert(key.provider)
                logger.warning("provider unavailable; machines keep their schedule", metadata: ["provider": "\(key.provider)", "why": "\(down.reason)"])
            } else {
                logger.debug("provider still unavailable", metadata: ["provider": "\(key.provider)", "why": "\(down.reason)"])
            }
            return BatchOutcome(calls: calls, next: .stop, result: "shim_down")
        }
        let rpc = RPCError(from: error)
        switch rpc.code {
        case .unauthenticated, .permissionDenied:
            try await invalidate(key, reason: rpc.message)
            let message = "credential invalid: \(rpc.message)"
            try await fail(key, batch, message, now: now)
            return BatchOutcome(calls: calls, next: .failRest(message), result: "credential_invalid")
        case .resourceExhausted:
            // Throttled: give the cloud room; the machines' own backoff stays.
            let pauseFor = rpc.retryAfter ?? settings.shortPollCap
            pause(key, until: now + pauseFor, .throttled)
            logger.notice("throttled", metadata: ["credential": "\(key)", "method": "\(method)", "pause": "\(pauseFor)"])
            return BatchOutcome(calls: calls, next: .stop, result: "throttled")
        default:
            logger.warning("provider call failed", metadata: ["credential": "\(key)", "method": "\(method)", "error": "\(rpc)"])
            try await fail(key, batch, "\(method) failed: \(rpc)", now: now)
            return BatchOutcome(calls: calls, next: .go, result: "error")
        }
    }

    /// An answer that breaks the alignment rule: an error on the batch.
    private func misaligned(
        calls: Int, key: CredentialKey, batch: [TrackedMachine], method: String, problem: String, now: Timestamp
    ) async throws -> BatchOutcome {
        logger.warning("provider call failed", metadata: ["credential": "\(key)", "method": "\(method)", "error": "\(problem)"])
        try await fail(key, batch, "\(method) failed: \(problem)", now: now)
        return BatchOutcome(calls: calls, next: .go, result: "error")
    }

    /// Records an error on every machine of a batch and bumps them: written
    /// first, then remembered.
    func fail(_ key: CredentialKey, _ batch: [TrackedMachine], _ message: String, now: Timestamp) async throws {
        var results: [PollResult] = []
        var entries: [ScheduleEntry] = []
        for machine in batch where machines[machine.id]?.key == key {
            results.append(PollResult(machineID: machine.id, pollError: message))
            if let entry = schedules[key]?.nextBump(machine.id, now: now) { entries.append(entry) }
        }
        try await store.applyPoll(results, schedule: entries)
        for result in results { machines[result.machineID]?.remember(result) }
        schedules[key]?.commit(entries)
        // Written, and the shim (if any was asked) answered: no more retries.
        retries.removeValue(forKey: key)
    }
}
