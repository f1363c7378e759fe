@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Testing
import TestSupport

/// After a provider's shim is swapped for another backend, every machine of
/// that provider is polled at once (issue 17, item 6): a long-group machine
/// would otherwise show the old backend's answer for up to 15 minutes.
@Suite("Provider swap polls at once")
struct ProviderSwapPollTests {
    @Test func aSwapPollsTheProvidersLongGroupMachinesAtOnceNotAtTheirLongPoll() async throws {
        try await PollerTests.with { f in
            try await f.addLongGroupMachine("m1", addresses: ["10.0.0.1"])
            try await f.addLongGroupMachine("m2", addresses: ["10.0.0.2"])
            f.otherCloud.set("i-o1", .running, addresses: ["10.9.0.1"])
            try await f.add("o1", instance: "i-o1", provider: "other")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(try await f.entry("o1")?.group == .long)
            let longDue = try #require(try await f.entry("m2")?.due)
            #expect(longDue - f.now > .seconds(800), "next poll in about 15 minutes")

            // The new backend answers with other addresses.
            f.cloud.set("i-m1", .running, addresses: ["10.1.0.1"])
            f.cloud.set("i-m2", .running, addresses: ["10.1.0.2"])
            try await PollerLoopTests.running(f) {
                let calls = f.cloud.calls("Instances").count
                let otherCalls = f.otherCloud.calls("Instances").count
                let writes = f.store.count(.applyPoll)
                let now = f.now
                f.router.swapped("fake")
                try await withTimeout(.seconds(10), "the swapped provider's machines to be polled") {
                    await f.store.waitUntil(.applyPoll, count: writes + 1)
                }
                #expect(f.now == now, "polled without the clock moving")
                #expect(f.cloud.calls("Instances").count == calls + 1, "one batch")
                #expect(f.cloud.calls("Instances").last?.ids.sorted() == ["i-m1", "i-m2"])
                #expect(f.otherCloud.calls("Instances").count == otherCalls, "another provider's machines wait for their time")
                #expect(try await f.machine("m1").addressValues == ["10.1.0.1"])
                #expect(try await f.machine("m2").addressValues == ["10.1.0.2"])
                let entry = try #require(try await f.entry("m1"))
                #expect(entry.group == .long, "still long: the answer keeps it there")
                #expect(entry.due - now > .seconds(800), "and its next poll is a long poll from now")
            }
        }
    }

    @Test func aSwapLiftsTheOldBackendsThrottle() async throws {
        try await PollerTests.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1")
            try await f.tick()
            f.cloud.fail("Instances", with: RPCError(
                .resourceExhausted, "RequestLimitExceeded", metadata: [(RPCError.retryAfterKey, "600000")]))
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").count == 1)
            f.cloud.fail("Instances", with: nil)
            try await PollerLoopTests.running(f) {
                let writes = f.store.count(.applyPoll)
                let now = f.now
                f.router.swapped("fake")
                try await withTimeout(.seconds(10), "the poll through the new backend") {
                    await f.store.waitUntil(.applyPoll, count: writes + 1)
                }
                #expect(f.now == now, "not after the old backend's 10-minute throttle")
                #expect(try await f.entry("m1")?.group == .long)
            }
        }
    }
}
