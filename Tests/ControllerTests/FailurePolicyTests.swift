@_spi(Testing) import Controller
import Core
import Testing

/// What a failed batch means (`docs/DESIGN.md` §6.2, §6.3), on the pure
/// decision: no engine, store or clock. The engine's side of each rule is
/// in PollerTests, PollerRuleTests and PollerLoopTests (see the map at the
/// top of PollerTests).
@Suite("Failure policy")
struct FailurePolicyTests {
    static let t0 = Timestamp(nanosecondsSinceEpoch: 1_000_000_000_000)
    static let policy = FailurePolicy(settings: PollSettings())

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var failure: BatchFailure
        /// Failed tries in a row so far.
        var retries = 0
        var expected: FailureDecision
        var testDescription: String { name }
    }

    static let throttle = RPCError(.resourceExhausted, "slow down", metadata: [(RPCError.retryAfterKey, "10000")])
    static let down = ShimUnavailable(provider: "fake", reason: "no shim is running (it is being restarted)")
    static let starting = ShimUnavailable(provider: "fake", reason: "its shim is starting", starting: true)

    static let cases: [Case] = [
        Case(
            name: "Unauthenticated: invalidate with the provider's message, record it, the rest get it without a call",
            failure: .call(method: "Instances", RPCError(.unauthenticated, "AuthFailure: key revoked")),
            expected: FailureDecision(
                invalidate: "AuthFailure: key revoked", pollError: "credential invalid: AuthFailure: key revoked",
                rest: .fail("credential invalid: AuthFailure: key revoked"), result: "credential_invalid")),
        Case(
            name: "PermissionDenied from ValidateCredential: the same",
            failure: .call(method: "ValidateCredential", RPCError(.permissionDenied, "UnauthorizedOperation")),
            expected: FailureDecision(
                invalidate: "UnauthorizedOperation", pollError: "credential invalid: UnauthorizedOperation",
                rest: .fail("credential invalid: UnauthorizedOperation"), result: "credential_invalid")),
        Case(
            name: "ResourceExhausted with a hint: pause for the hint, no bump, the rest wait",
            failure: .call(method: "NetworkInterfaces", throttle),
            expected: FailureDecision(pause: PairPause(until: t0 + .seconds(10), reason: .throttled), rest: .stop, result: "throttled")),
        Case(
            name: "ResourceExhausted without a hint: pause for the short-poll cap",
            failure: .call(method: "Instances", RPCError(.resourceExhausted, "slow down")),
            expected: FailureDecision(pause: PairPause(until: t0 + .seconds(60), reason: .throttled), rest: .stop, result: "throttled")),
        Case(
            name: "a throttle leaves the count of tries alone",
            failure: .call(method: "Instances", throttle), retries: 3,
            expected: FailureDecision(pause: PairPause(until: t0 + .seconds(10), reason: .throttled), rest: .stop, result: "throttled")),
        Case(
            name: "any other call error: recorded on the batch, the next batch goes on",
            failure: .call(method: "Instances", RPCError(.deadlineExceeded, "no answer within 30 s")),
            expected: FailureDecision(pollError: "Instances failed: DeadlineExceeded: no answer within 30 s", rest: .go, result: "error")),
        Case(
            name: "an answer not aligned with the ids: recorded, the next batch goes on",
            failure: .misaligned(method: "NetworkInterfaces", problem: "the provider answered 1 results for 2 ids"),
            expected: FailureDecision(
                pollError: "NetworkInterfaces failed: the provider answered 1 results for 2 ids", rest: .go, result: "error")),
        Case(
            name: "shim down, first try: pause 1 s, nothing recorded, the rest wait",
            failure: .shimDown(down),
            expected: FailureDecision(pause: PairPause(until: t0 + .seconds(1), reason: .shimDown), retries: 1, rest: .stop, result: "shim_down")),
        Case(
            name: "shim still starting: the same",
            failure: .shimDown(starting), retries: 1,
            expected: FailureDecision(pause: PairPause(until: t0 + .seconds(2), reason: .shimDown), retries: 2, rest: .stop, result: "shim_down")),
        Case(
            name: "shim down, fifth try: 16 s",
            failure: .shimDown(down), retries: 4,
            expected: FailureDecision(pause: PairPause(until: t0 + .seconds(16), reason: .shimDown), retries: 5, rest: .stop, result: "shim_down")),
        Case(
            name: "shim down for long: the short-poll cap",
            failure: .shimDown(down), retries: 40,
            expected: FailureDecision(pause: PairPause(until: t0 + .seconds(60), reason: .shimDown), retries: 41, rest: .stop, result: "shim_down")),
        Case(
            name: "write failed: pause to retry, nothing remembered, the rest wait",
            failure: .writeFailed, retries: 2,
            expected: FailureDecision(pause: PairPause(until: t0 + .seconds(4), reason: .storeFailed), retries: 3, rest: .stop, result: "store_error")),
        Case(
            name: "provider not configured: recorded, and on the rest without a call",
            failure: .notConfigured(provider: "nowhere"),
            expected: FailureDecision(
                pollError: "provider nowhere is not configured", rest: .fail("provider nowhere is not configured"), result: "error")),
        Case(
            name: "refused by the gate: recorded, and on the rest without a call; not invalidated again",
            failure: .credentialRefused("expired at 2020-01-01T00:00:00Z"),
            expected: FailureDecision(
                pollError: "credential invalid: expired at 2020-01-01T00:00:00Z",
                rest: .fail("credential invalid: expired at 2020-01-01T00:00:00Z"), result: "credential_invalid")),
    ]

    @Test(arguments: cases)
    func decides(_ example: Case) {
        #expect(Self.policy.decide(example.failure, retries: example.retries, now: Self.t0) == example.expected)
    }

    @Test func aShortPollBelowOneSecondStartsTheRetriesThere() {
        let policy = FailurePolicy(settings: PollSettings(shortPoll: .milliseconds(200), shortPollCap: .seconds(1)))
        #expect((0..<5).map { policy.retryWait(after: $0) } == [200, 400, 800, 1000, 1000].map { Duration.milliseconds($0) })
    }

    @Test func aCredentialErrorBeginsAsAnUpdatedCredentialLooksForIt() {
        let decision = Self.policy.decide(.credentialRefused("gone"), retries: 0, now: Self.t0)
        #expect(decision.pollError?.hasPrefix(FailurePolicy.credentialInvalid) == true)
    }
}
