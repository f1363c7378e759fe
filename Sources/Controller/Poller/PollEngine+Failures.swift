internal import Core
internal import Logging

/// Applying the failure policy's decisions: the policy decides what a
/// failed batch means (``FailurePolicy``, pure); here the engine takes the
/// pause and the count of tries, reports the failure, marks the credential
/// invalid and records the error on the batch's machines, in that order
/// (each write before anything is remembered).
extension PollEngine {
    /// The failure a provider call's error is; a cancellation is rethrown.
    static func failure(_ error: any Error, method: String) throws -> BatchFailure {
        if error is CancellationError { throw error }
        if let down = error as? ShimUnavailable { return .shimDown(down) }
        return .call(method: method, RPCError(from: error))
    }

    /// A batch of `key`'s pair failed: decides, reports, and applies the
    /// decision; returns what the pair's remaining batches do. Throws what
    /// the store throws (the batch's write then failed).
    func handle(
        _ failure: BatchFailure, _ key: CredentialKey, _ batch: [TrackedMachine], calls: Int, now: Timestamp, fence: LeaseFence?
    ) async throws -> BatchOutcome {
        let decision = decide(failure, for: key, now: now)
        report(failure, decision, key: key, batch: batch, now: now)
        if let reason = decision.invalidate { try await invalidate(key, reason: reason) }
        if let message = decision.pollError { try await fail(key, batch, message, now: now, fence: fence) }
        return BatchOutcome(calls: calls, next: decision.rest, result: decision.result)
    }

    /// A write of the pair failed (the store is busy or full): it pauses,
    /// and nothing of the batch is remembered. Refused by fencing, the
    /// lease is gone: the pair is dropped, not retried.
    func storeFailed(_ key: CredentialKey, _ batch: [TrackedMachine], _ error: any Error, fence: LeaseFence?) {
        let now = clock.now
        if let fence, (error as? StoreError)?.kind == .leaseLost {
            logger.warning(
                "lease lost: a batch's results were refused and the pair is left to its new holder",
                metadata: ["credential": "\(key)", "machines": "\(batch.count)", "epoch": "\(fence.epoch)"])
            metrics?.batchPolled(provider: key.provider, size: batch.count, result: "lease_lost")
            ownership?.lost(fence)
            return
        }
        let decision = decide(.writeFailed, for: key, now: now)
        logger.error(
            "could not write a batch's results; its machines are polled again shortly",
            metadata: [
                "credential": "\(key)", "machines": "\(batch.count)", "retry": "\((decision.pause?.until ?? now) - now)", "error": "\(error)",
            ])
        metrics?.batchPolled(provider: key.provider, size: batch.count, result: decision.result)
    }

    /// The policy's decision for `key`'s pair, with its pause and its count
    /// of tries taken.
    private func decide(_ failure: BatchFailure, for key: CredentialKey, now: Timestamp) -> FailureDecision {
        let decision = failurePolicy(for: key).decide(failure, retries: retries[key, default: 0], now: now)
        if let pause = decision.pause { pauses[key] = pause }
        if let tries = decision.retries { retries[key] = tries }
        return decision
    }

    /// Logs a failure (an invalidated credential is logged as it is marked).
    private func report(_ failure: BatchFailure, _ decision: FailureDecision, key: CredentialKey, batch: [TrackedMachine], now: Timestamp) {
        switch failure {
        case .notConfigured, .writeFailed:
            break
        case .credentialRefused:
            logger.debug("batch refused by the credential gate", metadata: ["credential": "\(key)", "machines": "\(batch.count)"])
        case .shimDown(let down):
            if down.starting {
                logger.debug("waiting for the provider's shim to start", metadata: ["provider": "\(key.provider)"])
            } else if shimDown.insert(key.provider).inserted {
                logger.warning("provider unavailable; machines keep their schedule", metadata: ["provider": "\(key.provider)", "why": "\(down.reason)"])
            } else {
                logger.debug("provider still unavailable", metadata: ["provider": "\(key.provider)", "why": "\(down.reason)"])
            }
        case .call(let method, let error):
            if decision.invalidate != nil { break }
            if let pause = decision.pause {
                logger.notice("throttled", metadata: ["credential": "\(key)", "method": "\(method)", "pause": "\(pause.until - now)"])
            } else {
                logger.warning("provider call failed", metadata: ["credential": "\(key)", "method": "\(method)", "error": "\(error)"])
            }
        case .misaligned(let method, let problem):
            logger.warning("provider call failed", metadata: ["credential": "\(key)", "method": "\(method)", "error": "\(problem)"])
        }
    }
}
