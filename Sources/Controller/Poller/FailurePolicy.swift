public import Core

/// What went wrong with a batch of one (provider, credential) pair.
public enum BatchFailure: Hashable, Sendable {
    /// No provider of that name is configured.
    case notConfigured(provider: String)
    /// The credential gate refused the pair's credential (missing, marked
    /// invalid, expired, or found invalid by its shim), for this reason.
    case credentialRefused(String)
    /// A provider call failed with this status (its code, message and
    /// retry-after hint).
    case call(method: String, RPCError)
    /// A provider call's answer does not align with the ids asked (see
    /// ``CloudAccess``); `problem` says how.
    case misaligned(method: String, problem: String)
    /// The provider's shim is not serving (down, restarting, or starting).
    case shimDown(ShimUnavailable)
    /// The batch's results, or its error, could not be written.
    case writeFailed
}

/// A pause of one pair: it is not polled until `until`, and its machines
/// keep their schedule meanwhile.
public struct PairPause: Hashable, Sendable {
    public enum Reason: Hashable, Sendable {
        /// ResourceExhausted: the retry-after hint, or the short-poll cap.
        case throttled
        /// The provider's shim is down or still starting.
        case shimDown
        /// The batch's results could not be written.
        case storeFailed
    }

    public var until: Timestamp
    public var reason: Reason

    public init(until: Timestamp, reason: Reason) {
        self.until = until
        self.reason = reason
    }
}

/// What the poll engine does about a ``BatchFailure``.
public struct FailureDecision: Hashable, Sendable {
    /// What the pair's remaining batches of this round do.
    public enum Rest: Hashable, Sendable {
        /// On to the pair's next batch.
        case go
        /// Stop the pair's remaining batches: they stay due and are polled
        /// when the pause ends.
        case stop
        /// The remaining batches get this error, without a call.
        case fail(String)
    }

    /// Pause the pair (nil: no pause).
    public var pause: PairPause?
    /// The pair's failed tries in a row from now on (nil: unchanged).
    public var retries: Int?
    /// Mark the pair's credential invalid with this reason (nil: leave it).
    public var invalidate: String?
    /// Record this error on the batch's machines and bump them (nil: the
    /// machines keep their schedule and their last poll's record).
    public var pollError: String?
    public var rest: Rest
    /// The batch's result as the metrics count it: error,
    /// credential_invalid, throttled, shim_down or store_error.
    public var result: String

    public init(
        pause: PairPause? = nil, retries: Int? = nil, invalidate: String? = nil, pollError: String? = nil, rest: Rest, result: String
    ) {
        self.pause = pause
        self.retries = retries
        self.invalidate = invalidate
        self.pollError = pollError
        self.rest = rest
        self.result = result
    }
}

/// How the poll engine answers a failed batch, as a pure decision (like
/// ``PollSchedule``): no I/O, no clock of its own, no engine state but what
/// the caller passes (`docs/DESIGN.md` §6.2, §6.3). The engine applies the
/// decision: it pauses, counts the tries, invalidates, records the error,
/// then goes on as ``FailureDecision/rest`` says.
///
/// - Unauthenticated / PermissionDenied from any call: the credential is
///   invalid (with the provider's message), the batch records it, and the
///   pair's other batches get the same error without a call.
/// - ResourceExhausted: the pair pauses for the retry-after hint (or the
///   short-poll cap); the machines are not bumped, the rest wait too.
/// - Any other call error, or an answer not aligned with the ids: the batch
///   records "<method> failed: …" and is bumped; the next batch goes on.
/// - The shim is not serving, or the write failed: the pair pauses to be
///   tried again, 1 s, 2 s, 4 s … up to the short-poll cap (the short poll,
///   if that is shorter, to begin with); nothing is recorded on the
///   machines, and the rest wait.
/// - The provider is not configured, or the gate refused the credential:
///   the batch records why, and so do the pair's other batches.
public struct FailurePolicy: Sendable {
    public let settings: PollSettings

    /// The first wait before a pair whose shim is down, or whose write
    /// failed, is tried again (the short poll, if that is shorter).
    public static let retryPause: Duration = .seconds(1)

    /// How a poll error about the pair's credential begins (an updated
    /// credential polls at once the machines that carry it).
    public static let credentialInvalid = "credential invalid"

    public init(settings: PollSettings) {
        self.settings = settings
    }

    /// - Parameters:
    ///   - retries: the pair's failed tries in a row so far (shim down,
    ///     store failed), which set how long a retry waits.
    public func decide(_ failure: BatchFailure, retries: Int, now: Timestamp) -> FailureDecision {
        switch failure {
        case .notConfigured(let provider):
            let message = "provider \(provider) is not configured"
            return FailureDecision(pollError: message, rest: .fail(message), result: "error")
        case .credentialRefused(let reason):
            let message = "\(Self.credentialInvalid): \(reason)"
            return FailureDecision(pollError: message, rest: .fail(message), result: "credential_invalid")
        case .call(_, let error) where error.code == .unauthenticated || error.code == .permissionDenied:
            let message = "\(Self.credentialInvalid): \(error.message)"
            return FailureDecision(invalidate: error.message, pollError: message, rest: .fail(message), result: "credential_invalid")
        case .call(_, let error) where error.code == .resourceExhausted:
            // Throttled: give the cloud room; the machines' own backoff stays.
            let pause = PairPause(until: now + (error.retryAfter ?? settings.shortPollCap), reason: .throttled)
            return FailureDecision(pause: pause, rest: .stop, result: "throttled")
        case .call(let method, let error):
            return FailureDecision(pollError: "\(method) failed: \(error)", rest: .go, result: "error")
        case .misaligned(let method, let problem):
            return FailureDecision(pollError: "\(method) failed: \(problem)", rest: .go, result: "error")
        case .shimDown:
            // Not the cloud's answer: the machines keep their schedule (still
            // due) and are polled once the shim is back.
            return retry(.shimDown, retries: retries, now: now, result: "shim_down")
        case .writeFailed:
            return retry(.storeFailed, retries: retries, now: now, result: "store_error")
        }
    }

    /// How long the pair waits after `retries` failed tries in a row: 1 s,
    /// 2 s, 4 s … the short-poll cap.
    public func retryWait(after retries: Int) -> Duration {
        let first = min(settings.shortPoll, Self.retryPause)
        return min(first * Double(1 << min(retries, 20)), max(settings.shortPollCap, first))
    }

    private func retry(_ reason: PairPause.Reason, retries: Int, now: Timestamp, result: String) -> FailureDecision {
        FailureDecision(
            pause: PairPause(until: now + retryWait(after: retries), reason: reason), retries: retries + 1, rest: .stop, result: result
        )
    }
}
