@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Logging
import Testing
import TestSupport

/// The poller's own loop (`run()`) on the manual clock, and what must hold
/// when the cloud, a shim or the store is in trouble: the loop never spins,
/// memory follows the store, and one call at most is in flight per pair.
///
/// The loop is driven the way it runs: the test starts `run()`, waits until
/// it parks on the clock, reads when it will wake, and moves time.
@Suite("Poller loop under stress")
struct PollerLoopTests {
    /// Runs `body` with `run()` going in the background, parked on the
    /// clock once the first round (loading the store) is done.
    static func running(_ f: PollerTests.Fixture, _ body: () async throws -> Void) async throws {
        let loop = Task { try await f.poller.run() }
        defer { loop.cancel() }
        try await parked(f)
        try await body()
        loop.cancel()
        _ = await loop.result
    }

    /// Waits until the loop sleeps on the clock: it has finished its round.
    static func parked(_ f: PollerTests.Fixture) async throws {
        try await withTimeout(.seconds(10), "the poll loop to park on the clock") { await f.clock.waitForSleepers() }
    }

    /// Moves time to the loop's next wake (at most `limit` away) and waits
    /// for it to park again; returns how far time moved.
    @discardableResult
    static func step(_ f: PollerTests.Fixture, limit: Duration = .seconds(3600)) async throws -> Duration {
        let wake = try #require(f.clock.nextDeadline)
        let move = min(max(wake - f.now, .zero), limit)
        f.clock.advance(by: move)
        try await parked(f)
        return move
    }

    @Test(arguments: [
        ("throttled", Duration.seconds(60)),
        ("throttled", Duration.seconds(30)),
    ])
    func aThrottledPairNeitherSpinsNorIsPolledDuringItsPause(_ fault: String, _ pause: Duration) async throws {
        try await PollerTests.with { f in
            for index in 0..<50 {
                f.cloud.set("i-m\(index)", .running, addresses: ["10.0.0.\(index)"])
                try await f.add("m\(index)")
            }
            f.cloud.fail("Instances", with: RPCError(
                .resourceExhausted, "RequestLimitExceeded",
                metadata: [(RPCError.retryAfterKey, "\(pause.totalNanoseconds / 1_000_000)")]))
            try await Self.running(f) {
                #expect(f.clock.nextDeadline == f.now + .milliseconds(250), "first wake: the next events read")
                // Walk to the machines' first due time: they are polled and throttled.
                while f.cloud.calls("Instances").isEmpty { try await Self.step(f) }
                let throttledAt = f.now
                f.cloud.fail("Instances", with: nil)
                let reads = f.store.count(.events)

                // Every wake during the pause is an events read, 250 ms apart:
                // the due machines of the paused pair never wake the loop.
                var wakes = 0
                while f.now < throttledAt + (pause - .milliseconds(250)) {
                    let moved = try await Self.step(f)
                    #expect(moved == .milliseconds(250), "woke after \(moved) at \(f.now - throttledAt) into the pause")
                    wakes += 1
                }
                #expect(f.store.count(.events) - reads == wakes, "one events read per wake, no round in between")
                #expect(f.cloud.calls("Instances").count == 1, "nothing sent while paused")
                #expect(f.clock.nextDeadline == throttledAt + pause, "the next wake is the end of the pause")
                try await Self.step(f)
                #expect(f.cloud.calls("Instances").count == 2, "polled as soon as the pause ends")
                #expect(try await f.entry("m0")?.group == .long)
            }
        }
    }

    @Test func aShimDownSleepsUntilTheRetryAndWakesTheMomentItServesAgain() async throws {
        try await PollerTests.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1")
            f.cloud.fail("Instances", with: ShimUnavailable(provider: "fake", reason: "no shim is running (it is being restarted)"))
            try await Self.running(f) {
                while f.cloud.calls("Instances").isEmpty { try await Self.step(f) }
                let downAt = f.now
                // A crash loop: tries 1, 2, 4, 8 … s apart, nothing in between.
                let reads = f.store.count(.events)
                var tries: [Duration] = []
                for _ in 0..<56 {
                    let before = f.cloud.calls("Instances").count
                    try await Self.step(f)
                    if f.cloud.calls("Instances").count > before { tries.append(f.now - downAt) }
                }
                #expect(f.now - downAt == .seconds(14))
                #expect(f.store.count(.events) - reads == 56, "one events read per 250 ms")
                #expect(tries == [1, 3, 7].map { Duration.seconds($0) }, "the tries back off")

                // The shim comes back: no waiting for the clock.
                f.cloud.fail("Instances", with: nil)
                let now = f.now
                let writes = f.store.count(.applyPoll)
                f.router.serve("fake")
                try await withTimeout(.seconds(10), "the poll once the shim serves") { await f.store.waitUntil(.applyPoll, count: writes + 1) }
                #expect(try await f.entry("m1")?.group == .long)
                #expect(f.now == now, "polled without the clock moving")
            }
        }
    }

    @Test func thisProcesssOwnChangesAreReadAtOnceNotAtTheNextEventsRead() async throws {
        try await PollerTests.with { f in
            try await Self.running(f) {
                let parkedUntil = try #require(f.clock.nextDeadline)
                let saves = f.store.count(.saveSchedule)
                try await f.add("m1")
                f.poller.storeChanged()
                // The new machine's schedule is saved once its event is read.
                try await withTimeout(.seconds(10), "the change to be read") { await f.store.waitUntil(.saveSchedule, count: saves + 1) }
                #expect(f.clock.now < parkedUntil, "read without waiting for the clock")
                #expect(try await f.entry("m1")?.due == f.now + .seconds(3))
            }
        }
    }

    @Test func aFailedWriteIsNotRememberedSoTheSameAnswerIsWrittenNext() async throws {
        try await PollerTests.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1")
            try await f.tick()
            f.store.fail(.applyPoll)
            try await f.tick(.seconds(3))
            #expect(f.logs.all.contains { $0.level == .error && $0.message.hasPrefix("could not write a batch's results") })
            #expect(try await f.machine("m1").instanceStatus.state == .unspecified, "nothing was written")
            #expect(try await f.entry("m1")?.interval == .seconds(3), "the schedule did not move either")

            // The identical answer, a moment later, is written.
            try await f.tick(.seconds(1))
            #expect(f.cloud.calls("Instances").count == 2)
            let machine = try await f.machine("m1")
            #expect(machine.instanceStatus.state == .running)
            #expect(machine.addressValues == ["10.0.0.1"])
            #expect(try await f.entry("m1")?.group == .long)
        }
    }

    @Test func aFailedErrorWriteIsRetriedToo() async throws {
        try await PollerTests.with { f in
            f.cloud.set("i-m1", .running)
            try await f.add("m1")
            try await f.tick()
            f.cloud.fail("Instances", with: RPCError(.unavailable, "cloud down"))
            f.store.fail(.applyPoll)
            try await f.tick(.seconds(3))
            #expect(try await f.machine("m1").pollError == nil)
            #expect(try await f.entry("m1")?.interval == .seconds(3))
            try await f.tick(.seconds(1))
            #expect(try await f.machine("m1").pollError == "Instances failed: Unavailable: cloud down")
            #expect(try await f.entry("m1")?.interval == .seconds(6))
        }
    }

    @Test func aFailedInvalidationIsNotRememberedSoItIsWrittenNext() async throws {
        try await PollerTests.with { f in
            f.cloud.set("i-m1", .running)
            f.cloud.setValidity(false, reason: "key revoked")
            try await f.add("m1")
            try await f.tick()
            f.store.fail(.invalidateCredential)
            try await f.tick(.seconds(3))
            #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == nil)
            try await f.tick(.seconds(1))
            #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == "key revoked")
            #expect(try await f.machine("m1").pollError == "credential invalid: key revoked")
        }
    }

    @Test func aStoreThatFailsEveryReadDoesNotSpinTheLoop() async throws {
        try await PollerTests.with { f in
            f.cloud.set("i-m1", .running)
            try await f.add("m1")
            try await Self.running(f) {
                f.store.fail(.events, times: 1000)
                let reads = f.store.count(.events)
                for _ in 0..<20 { try await Self.step(f, limit: .seconds(1)) }
                #expect(f.store.count(.events) - reads == 20, "one attempt per wake")
                #expect(f.logs.all.filter { $0.message == "poll round failed" }.count == 20)
            }
        }
    }

    @Test func aBatchsCallsGoOutWhileThePreviousBatchIsWrittenAndItIsRememberedOnlyOnceWritten() async throws {
        try await PollerTests.with(settings: PollSettings(longPollJitter: 0, maxIDsPerCall: 2)) { f in
            for index in 0..<6 {
                f.cloud.set("i-m\(index)", .running, addresses: ["10.0.0.\(index)"])
                try await f.add("m\(index)")
            }
            try await f.tick()
            f.clock.advance(by: .seconds(3))
            f.store.writes.hold()
            let round = Task { try await f.poller.pollOnce() }
            try await withTimeout(.seconds(10), "the first batch's write to be held") { await f.store.writes.waitUntilHeld() }
            // The second batch's calls go out while the first is being written.
            try await withTimeout(.seconds(10), "the second batch's calls") { await f.cloud.waitUntilCalls("NetworkInterfaces", 2) }
            #expect(f.cloud.calls("Instances").count == 2, "not the third: one write waits for the one before")
            #expect(try await f.machine("m0").instanceStatus.state == .unspecified, "nothing written yet")
            f.store.writes.release()
            #expect(try await round.value == 9, "ValidateCredential, Instances and NetworkInterfaces for 3 batches")
            #expect(f.store.maxWritesInFlight == 1)
            #expect(f.cloud.maxInFlight == 1)
            for index in 0..<6 { #expect(try await f.entry("m\(index)")?.group == .long) }
        }
    }

    @Test func twoConcurrentRoundsKeepOneCallInFlightPerPair() async throws {
        try await PollerTests.with(settings: PollSettings(longPollJitter: 0, maxIDsPerCall: 2)) { f in
            for index in 0..<6 {
                f.cloud.set("i-m\(index)", .running, addresses: ["10.0.0.\(index)"])
                try await f.add("m\(index)")
            }
            f.otherCloud.set("i-o1", .running, addresses: ["10.9.0.1"])
            try await f.tick()
            f.clock.advance(by: .seconds(3))
            f.cloud.gate.hold()
            let first = Task { try await f.poller.pollOnce() }
            try await withTimeout(.seconds(10), "the first round's call to be in flight") { await f.cloud.gate.waitUntilHeld() }
            // A second round while the first one's call is in flight, with
            // the first pair's machines still due and another pair's due:
            // it polls the other pair, and leaves the first one alone.
            try await f.add("o1", instance: "i-o1", provider: "other")
            try await f.poller.pollOnce()
            f.clock.advance(by: .seconds(3))
            let second = try await f.poller.pollOnce()
            #expect(second == 3, "ValidateCredential, Instances, NetworkInterfaces for provider other only")
            #expect(f.cloud.calls("Instances").count == 1)
            f.cloud.gate.release()
            _ = try await first.value
            #expect(f.cloud.maxInFlight == 1)
            #expect(f.cloud.calls("Instances").count == 3, "ceil(6 / 2) batches, each machine once")
            #expect(f.cloud.calls("Instances").flatMap(\.ids).sorted() == (0..<6).map { "i-m\($0)" })
        }
    }
}
