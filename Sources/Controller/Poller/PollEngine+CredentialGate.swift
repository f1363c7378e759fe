internal import Core
internal import Logging

/// The credential gate, before every batch: the pair's credential exists,
/// is not marked invalid, has not expired, and its shim says it is usable
/// (`docs/DESIGN.md` §6.3). A credential found invalid is asked about again
/// once a minute while its machines wait; one set again, validated
/// elsewhere or removed is seen in the events log.
extension PollEngine {
    /// How often an invalid credential whose machines wait is validated
    /// again through its shim: a credential that failed for a while (an
    /// outage of the cloud's auth, a key rotated back) clears itself.
    static let credentialRecheck: Duration = .seconds(60)

    enum GateVerdict {
        /// Poll with this credential.
        case usable(ProviderV1.Credential, calls: Int)
        /// No call for this batch: refused, or ValidateCredential failed.
        case refused(BatchFailure, calls: Int)
    }

    /// The gate for one batch of `key`'s pair. Throws only what the store
    /// throws (or a cancellation): a failed ValidateCredential is a
    /// refusal, for the failure policy to decide on.
    func gate(_ key: CredentialKey, endpoint: ProviderEndpoint, now: Timestamp) async throws -> GateVerdict {
        if let reason = invalid[key] { return .refused(.credentialRefused(reason), calls: 0) }
        guard let stored = try await credentials.credential(key) else {
            return .refused(.credentialRefused("credential \(key) does not exist"), calls: 0)
        }
        if let reason = stored.invalidReason {
            invalid[key] = reason
            if rechecks[key] == nil { rechecks[key] = now + Self.credentialRecheck }
            return .refused(.credentialRefused(reason), calls: 0)
        }
        if let expiry = stored.expiresAt, expiry <= now {
            // Not re-checked: only setting it again helps.
            let reason = "expired at \(expiry.rfc3339)"
            invalid[key] = reason
            return .refused(.credentialRefused(reason), calls: 0)
        }
        let credential = stored.wire
        let verdict: ProviderV1.ValidateCredentialResponse
        do {
            verdict = try await measured(key, "ValidateCredential") { try await endpoint.access.validateCredential(credential, cloud: endpoint.cloud) }
        } catch {
            return .refused(try Self.failure(error, method: "ValidateCredential"), calls: 1)
        }
        guard verdict.valid else {
            try await invalidate(key, reason: verdict.reason)
            return .refused(.credentialRefused(verdict.reason), calls: 1)
        }
        metrics?.credential(provider: key.provider, name: key.name, valid: true)
        return .usable(credential, calls: 1)
    }

    /// Marks the credential invalid: in the store first, then here; it is
    /// asked about again in ``credentialRecheck``.
    func invalidate(_ key: CredentialKey, reason: String) async throws {
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

    /// An updated credential, or one found valid again: forget the gate's
    /// verdict, so the next batch validates it, and poll its paused machines
    /// at once.
    func credentialUsable(_ key: CredentialKey, now: Timestamp) {
        invalid.removeValue(forKey: key)
        rechecks.removeValue(forKey: key)
        for machine in machines.values where machine.key == key && machine.pollError?.hasPrefix(FailurePolicy.credentialInvalid) == true {
            withSchedule(key) { schedule in
                schedule.resetToShort(machine.id, now: now)
                schedule.makeDue(machine.id, at: now)
            }
        }
    }

    /// A removed credential: its machines stay and pause. They are made due
    /// now so that the gate records why at once (no cloud call is made).
    func credentialRemoved(_ key: CredentialKey, now: Timestamp) {
        invalid.removeValue(forKey: key)
        rechecks.removeValue(forKey: key)
        for machine in machines.values where machine.key == key { schedules[key]?.makeDue(machine.id, at: now) }
        logger.notice("credential removed; its machines are not polled until it is set again", metadata: ["credential": "\(key)"])
    }
}
