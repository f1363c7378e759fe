@_spi(Testing) import Controller
import Core
import Logging
import Support
import SwiftProtobuf
import Testing
import TestSupport

/// The gauges the poll engine sets (docs/DESIGN.md §6.6), on the real SQLite
/// store, an in-memory cloud and a manual clock: the last successful poll,
/// machines overdue (counted at most every 5 s of the clock) and the
/// credentials' expiries; and the process metrics read from /proc.
@Suite("Poller metrics (docs/DESIGN.md §6.6)")
struct PollerMetricsTests {
    struct Fixture {
        let clock: ManualPollClock
        let store: SQLiteMachineStore
        let cloud: TestCloud
        let poller: Poller
        let metrics: ControllerMetrics

        func add(_ id: String) async throws {
            try await store.addMachine(Machine(id: id, provider: "fake", credential: "main", instanceID: "i-\(id)"))
        }

        @discardableResult
        func tick(_ step: Duration = .zero) async throws -> Int {
            clock.advance(by: step)
            return try await poller.pollOnce()
        }

        /// The value of the one sample `series` (name and labels as
        /// rendered) in a scrape, nil if there is none.
        func value(_ series: String) -> Double? {
            let lines = metrics.render().split(separator: "\n").filter { $0.hasPrefix(series + " ") }
            guard lines.count == 1 else { return nil }
            return lines[0].split(separator: " ").last.flatMap { Double($0) }
        }

        func rendered(_ name: String) -> [String] {
            metrics.render().split(separator: "\n").filter { $0.hasPrefix(name) }.map(String.init)
        }

        var nowSeconds: Double { Double(clock.now.nanosecondsSinceEpoch) / 1e9 }
    }

    static func with(_ body: (Fixture) async throws -> Void) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = ManualPollClock()
        let logs = LogCapture()
        let store = try SQLiteMachineStore(path: directory.file("machines.db"), clock: clock, logger: logs.logger())
        try await store.setCredential(StoredCredential(provider: "fake", name: "main", authType: "token", attributes: ["token": "s3cret-value"]))
        try await store.setCredential(StoredCredential(provider: "other", name: "main", authType: "token", attributes: ["token": "s3cret-value"]))
        let cloud = TestCloud()
        let metrics = ControllerMetrics()
        let poller = try Poller(config: PollerConfig(
            clock: clock, store: store,
            providers: TestRouter(["fake": ProviderEndpoint(cloud: .with { $0.type = "fake" }, access: cloud)]),
            credentials: StoreCredentialAPI(store: store), logger: logs.logger(),
            settings: PollSettings(longPollJitter: 0), watchInterval: .milliseconds(250), jitterSeed: 42, metrics: metrics
        ))
        try await body(Fixture(clock: clock, store: store, cloud: cloud, poller: poller, metrics: metrics))
    }

    @Test func theLastSuccessfulPollIsWhenABatchWasLastWritten() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .allocating)
            try await f.add("m1")
            try await f.tick()
            #expect(f.rendered("instancepoller_last_successful_poll_timestamp_seconds{").isEmpty, "nothing polled yet")
            try await f.tick(.seconds(3))
            let first = f.nowSeconds
            #expect(f.value("instancepoller_last_successful_poll_timestamp_seconds{provider=\"fake\"}") == first)
            // A failed batch leaves it where it was.
            f.cloud.fail("Instances", with: RPCError(.unavailable, "cloud down"))
            try await f.tick(.seconds(6))
            #expect(f.cloud.calls("Instances").count == 2)
            #expect(f.value("instancepoller_last_successful_poll_timestamp_seconds{provider=\"fake\"}") == first)
            f.cloud.fail("Instances", with: nil)
            let entry = try #require(try await f.store.schedule(of: CredentialKey(provider: "fake", name: "main")).first)
            try await f.tick(entry.due - f.clock.now)
            #expect(f.value("instancepoller_last_successful_poll_timestamp_seconds{provider=\"fake\"}") == f.nowSeconds)
        }
    }

    @Test func machinesDueMoreThanAnIntervalAgoAreOverdueCountedAtMostEveryFiveSeconds() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .allocating)
            f.cloud.set("i-m2", .allocating)
            try await f.add("m1")
            try await f.add("m2")
            try await f.tick()
            // Every provider with a credential has a count, 0 without machines.
            #expect(f.value("instancepoller_machines_overdue{provider=\"fake\"}") == 0)
            #expect(f.value("instancepoller_machines_overdue{provider=\"other\"}") == 0)
            // Throttled at their first poll (due at 3 s): paused, not bumped.
            f.cloud.fail("Instances", with: RPCError(.resourceExhausted, "slow down", metadata: [(RPCError.retryAfterKey, "60000")]))
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").count == 1)
            try await f.tick(.seconds(2))
            // 5 s: counted again; due at 3 s with a 3 s interval is not overdue yet.
            #expect(f.value("instancepoller_machines_overdue{provider=\"fake\"}") == 0)
            try await f.tick(.seconds(2))
            // 7 s: both are overdue, but the last count was 2 s ago.
            #expect(f.value("instancepoller_machines_overdue{provider=\"fake\"}") == 0)
            try await f.tick(.seconds(3))
            #expect(f.value("instancepoller_machines_overdue{provider=\"fake\"}") == 2)
            #expect(f.value("instancepoller_machines_overdue{provider=\"other\"}") == 0)
            // The pause over, they are polled and the next count finds none.
            f.cloud.fail("Instances", with: nil)
            try await f.tick(.seconds(60))
            #expect(f.cloud.calls("Instances").count == 2)
            #expect(f.value("instancepoller_machines_overdue{provider=\"fake\"}") == 0)
        }
    }

    @Test func credentialsWithAnExpiryHaveItsTimestampAndLoseTheSeriesWhenItGoes() async throws {
        try await Self.with { f in
            let expiry = Timestamp(nanosecondsSinceEpoch: 1_927_857_906_500_000_000)
            try await f.store.setCredential(StoredCredential(
                provider: "fake", name: "expiring", authType: "token", attributes: ["token": "s3cret-value"], expiresAt: expiry))
            try await f.tick()
            #expect(f.value("instancepoller_credential_expiry_timestamp_seconds{provider=\"fake\",credential=\"expiring\"}") == 1_927_857_906.5)
            #expect(f.rendered("instancepoller_credential_expiry_timestamp_seconds{").count == 1, "the others have no expiry")
            #expect(!f.metrics.render().contains("s3cret-value"))
            // Set again without an expiry: no series.
            try await f.store.setCredential(StoredCredential(provider: "fake", name: "expiring", authType: "token", attributes: ["token": "s3cret-value"]))
            try await f.tick()
            #expect(f.rendered("instancepoller_credential_expiry_timestamp_seconds{").isEmpty)
            // With one again, then removed.
            try await f.store.setCredential(StoredCredential(
                provider: "other", name: "main", authType: "token", attributes: ["token": "s3cret-value"], expiresAt: expiry))
            try await f.tick()
            #expect(f.value("instancepoller_credential_expiry_timestamp_seconds{provider=\"other\",credential=\"main\"}") == 1_927_857_906.5)
            try await f.store.removeCredential(provider: "other", name: "main")
            try await f.tick()
            #expect(f.rendered("instancepoller_credential_expiry_timestamp_seconds{").isEmpty)
        }
    }

    @Test func aConfigReloadSaysWhetherItSucceededAndWhenItLastDid() {
        let metrics = ControllerMetrics(build: BuildInfo(version: "1.2.3", revision: "abcdef012345"), configLoadedAt: Timestamp(nanosecondsSinceEpoch: 1_000_000_000_000))
        var text = metrics.render()
        #expect(text.contains("instancepoller_build_info{version=\"1.2.3\",revision=\"abcdef012345\"} 1"))
        #expect(text.contains("instancepoller_config_last_reload_successful 1"))
        #expect(text.contains("instancepoller_config_last_reload_success_timestamp_seconds 1000.0"))
        metrics.configReloaded(successful: false, at: Timestamp(nanosecondsSinceEpoch: 2_000_000_000_000))
        text = metrics.render()
        #expect(text.contains("instancepoller_config_last_reload_successful 0"))
        #expect(text.contains("instancepoller_config_last_reload_success_timestamp_seconds 1000.0"), "the last success stays")
        metrics.configReloaded(successful: true, at: Timestamp(nanosecondsSinceEpoch: 3_000_000_000_000))
        text = metrics.render()
        #expect(text.contains("instancepoller_config_last_reload_successful 1"))
        #expect(text.contains("instancepoller_config_last_reload_success_timestamp_seconds 3000.0"))
    }

    @Test func procStatFieldsAreCountedFromTheLastParenthesis() throws {
        // A command name with spaces and parentheses (proc(5): field 2).
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 125 0 0 20 0 9 0 123456 294105088 14973 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n"
        let stat = try #require(ProcessMetrics.Stat(line))
        #expect(stat.userTicks == 250)
        #expect(stat.systemTicks == 125)
        #expect(stat.startTicks == 123456)
        #expect(stat.virtualBytes == 294_105_088)
        #expect(stat.residentPages == 14973)
        #expect(ProcessMetrics.Stat("4242 (cut short) S 1 2") == nil)
        #expect(ProcessMetrics.bootTime("cpu  1 2 3\nbtime 1795836000\nprocesses 9\n") == 1_795_836_000)
        #expect(ProcessMetrics.bootTime("cpu  1 2 3\n") == nil)
    }

    @Test func processMetricsAreReadFromThisProcess() throws {
        let metrics = ControllerMetrics(build: BuildInfo(version: "1.2.3", revision: "unknown"), configLoadedAt: Timestamp(nanosecondsSinceEpoch: 0))
        let text = metrics.render()
        func value(_ name: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { $0.split(separator: " ").last.flatMap { Double($0) } }
        }
        let now = Double(SystemPollClock().now.nanosecondsSinceEpoch) / 1e9
        let start = try #require(value("process_start_time_seconds"))
        #expect(start > 1_600_000_000 && start <= now, "\(start)")
        #expect((value("process_open_fds") ?? 0) > 0)
        #expect((value("process_max_fds") ?? 0) >= (value("process_open_fds") ?? .infinity))
        #expect((value("process_resident_memory_bytes") ?? 0) > 0)
        #expect((value("process_virtual_memory_bytes") ?? 0) >= (value("process_resident_memory_bytes") ?? .infinity))
        #expect(value("process_cpu_seconds_total") != nil)
    }
}
