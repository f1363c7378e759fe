import Controller
import Support
import ControlAPI
import Core
import Foundation
import Logging
import ProviderShim
import SwiftProtobuf
import GRDB
import Testing
import TestSupport
import FakeProvider

/// The poll engine in the real controller while a cloud or a shim is in
/// trouble, and what an operator then sees through the CLI.
///
/// The CPU checks are guards against a busy loop, not benchmarks. Here (a
/// debug build, 20 machines) a loop that wakes at once while its pair is
/// paused used 93–96 % of a core over a pause, the fixed loop a few %; the
/// bound, a tenth of a core, tells them apart. `scripts/bench
/// --stress-only` measures the release controller (100 % before the fix).
@Suite("Poller under stress with the real binaries")
struct PollerStressTests {
    static let instances: [(id: String, address: String)] = (1...20).map { ("i-\($0)", "10.3.0.\($0)") }

    /// The share of one core the controller used (0.5 = half a core) from
    /// now until its log shows `line` `times` more times: the window is
    /// bounded by the controller's own events (a pause ending and the next
    /// one beginning), not by a sleep.
    static func cpuShare(
        of controller: ChildProcess, until line: String, times: Int, after index: Int
    ) async throws -> (share: Double, lines: ArraySlice<String>) {
        let clock = ContinuousClock()
        let startTime = clock.now
        let start = try #require(ProcessTree.cpuTime(of: controller.pid))
        var next = index + 1
        for _ in 0..<times {
            next = try await controller.stderrLines.waitForLine(containing: line, from: next).index + 1
        }
        let used = try #require(ProcessTree.cpuTime(of: controller.pid)) - start
        let elapsed = clock.now - startTime
        return (Double(used.totalNanoseconds) / Double(elapsed.totalNanoseconds), controller.stderrLines.lines[(index + 1)..<next])
    }

    /// Starts the controller on `scenario`'s fake cloud with the 20
    /// machines already in the store (agents pending, so they stay in the
    /// short group and are due all the time).
    static func start(_ h: ControllerHarness, faults: String) async throws -> ChildProcess {
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances(Self.instances, extra: faults))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        for (index, entry) in Self.instances.enumerated() {
            try await h.add("m\(index + 1)", provider: "cloud", instance: entry.id, agent: .pending)
        }
        return try await h.start()
    }

    /// The two ways a pair stays paused: its cloud throttles it (for 2 s
    /// at a time), or its shim crashes on every start (restarted at the
    /// test's backoff, 0.1 s doubling to 0.4 s). The controller logs `line`
    /// each time a pause begins; CPU is measured from one such line over
    /// the next `pauses`, after `warmUp` of them.
    static let pauses: [(name: String, faults: String, line: String, warmUp: Int, pauses: Int)] = [
        ("throttled", "{kind: throttle, methods: [Instances], retry_after: 2s}", "throttled", 1, 1),
        ("crash loop", "{kind: crash, methods: [Handshake], after_calls: 0}", "restarting shim", 2, 4),
    ]

    @Test(arguments: Self.pauses.map(\.name))
    func aPausedPairCostsAlmostNoCPU(pause name: String) async throws {
        let pause = try #require(Self.pauses.first { $0.name == name })
        let h = try ControllerHarness()
        defer { h.remove() }
        let controller = try await Self.start(h, faults: "faults:\n  - \(pause.faults)\n")
        var last = -1
        for _ in 0..<pause.warmUp {
            last = try await controller.stderrLines.waitForLine(containing: pause.line, from: last + 1).index
        }
        let (share, window) = try await Self.cpuShare(of: controller, until: pause.line, times: pause.pauses, after: last)
        #expect(share < 0.1, "the controller used \(Int(share * 100)) % of a core while its only pair was paused (\(name))")
        if name == "throttled" {
            #expect(controller.stderrLines.lines.contains { $0.contains("throttled") && $0.contains("pause=\"2.0 seconds\"") })
            let batches = window.filter { $0.contains("polling a batch") }.count
            #expect(batches == 1, "nothing during the pause; one batch when it ends, throttled again")
        }
        #expect(try await h.stop(controller) == 0)
    }

    /// Write first, then remember, in the real controller: while the store
    /// refuses a machine's writes (a trigger stands in for a locked or full
    /// database) the controller logs it, stays up and tries again later;
    /// once writes go through, the same answer is written.
    @Test func aStoreThatRefusesWritesLosesNothingOnceItTakesThemAgain() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        try await h.add("m1", provider: "cloud", instance: "i-1", agent: .pending)
        let database = try DatabaseQueue(path: h.storePath, configuration: { var c = Configuration(); c.busyMode = .timeout(10); return c }())
        try await database.write { db in
            try db.execute(sql: """
                CREATE TRIGGER refuse_m1 BEFORE UPDATE ON machines WHEN NEW.id = 'm1'
                BEGIN SELECT RAISE(ABORT, 'disk full (injected)'); END
                """)
        }
        let controller = try await h.start()
        let first = try await controller.stderrLines.waitForLine(containing: "could not write a batch's results")
        #expect(first.line.contains("disk full (injected)"), "\(first.line)")
        let second = try await controller.stderrLines.waitForLine(containing: "could not write a batch's results", from: first.index + 1)
        #expect(logValue("retry", in: second.line) != logValue("retry", in: first.line), "the retries back off: \(second.line)")
        #expect(try await h.store.machine(id: "m1")?.instanceStatus.state == .unspecified, "nothing of the refused batches was written")

        try await database.write { db in try db.execute(sql: "DROP TRIGGER refuse_m1") }
        let written = try await h.waitForMachines("m1's answer to be written once the store takes it") { $0["m1"]?.addressValues == ["10.3.0.1"] }
        #expect(written["m1"]?.instanceStatus.state == .running)
        #expect(written["m1"]?.pollError == nil)
        #expect(controller.exitStatusIfExited == nil, "the controller stayed up")
        #expect(try await h.stop(controller) == 0)
    }

    @Test func aVanishedInstanceIsShownAsNotFoundInWatchShowAndTheHistory() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        // i-1 runs until the test removes it from the cloud.
        let scenario = try h.scenario("cloud", """
            name: vanishing
            instances:
              - id: i-1
                timeline:
                  - {at: 0s, state: running, raw_status: running, interfaces: [{device_index: 0, addresses: [{value: 10.3.0.1}]}]}
            """)
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        try await h.add("m1", provider: "cloud", instance: "i-1", agent: .pending)
        let controller = try await h.start()
        try await h.waitForMachines("m1 to be found running") { $0["m1"]?.addressValues == ["10.3.0.1"] }
        // Through the fake cloud's control service, on the shim's socket.
        let cloud = try await RPCClient.connect(
            unixSocketPath: "\(h.runtimeDirectory)/cloud-1.sock", logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        let removed = try await cloud.call(FakeCloudControl.removeInstance, .with { $0.id = "i-1" }, timeout: .seconds(10))
        await cloud.close()
        #expect(removed.removed)
        let gone = try await h.waitForMachines("m1 to be found gone") { $0["m1"]?.instanceStatus.isNotFound == true }
        #expect(gone["m1"]?.interfaces.isEmpty == true)
        #expect(gone["m1"]?.instanceStatus.message == "instance not found by the provider")

        var result = try await h.cli(["watch", "--after", "0", "--no-follow"])
        let lines = result.stdout.split(separator: "\n")
        let changes = lines.filter { $0.contains("instance-status-changed") && $0.contains(" m1 ") }
        #expect(changes.count == 2, "\(result.stdout)")
        #expect(changes.last?.hasSuffix("running -> unknown (not-found): instance not found by the provider") == true, "\(changes)")
        #expect(lines.contains { $0.contains("addresses-changed") && $0.contains(" m1 ") && $0.hasSuffix("10.3.0.1 -> none") }, "\(result.stdout)")

        result = try await h.cli(["machines", "show", "m1"])
        #expect(result.stdout.contains("status       unknown (not-found): instance not found by the provider"), "\(result.stdout)")
        #expect(result.stdout.contains("history      (last 2 status changes, newest first)"), "\(result.stdout)")
        let history = result.stdout.split(separator: "\n").drop { !$0.hasPrefix("history") }.dropFirst()
        #expect(history.map { $0.split(separator: "  ").last.map(String.init) ?? "" } == [
            "unknown (not-found): instance not found by the provider", "running (running)",
        ])
        #expect(controller.stderrLines.lines.contains {
            $0.contains(" level=info ") && $0.contains("instance status changed from running to unknown (not-found): instance not found by the provider")
        })

        // The agent starts: recorded, shown, and the machine is polled again soon.
        result = try await h.cli(["machines", "set-agent-status", "m1", "started"])
        #expect(result.status == 0)
        result = try await h.cli(["machines", "show", "m1", "--format", "json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let machine = try #require(json["machine"] as? [String: Any])
        #expect((machine["agent_started_unix_nano"] as? String).flatMap(Int64.init).map { $0 > 0 } == true, "\(result.stdout)")
        #expect((json["status_history"] as? [Any])?.count == 2)
        result = try await h.cli(["machines", "show", "m1"])
        #expect(result.stdout.contains("agent        started, last started "), "\(result.stdout)")
        // Added with its agent started: started from then on, and the answer says so.
        result = try await h.cli(["machines", "add", "m2", "--provider", "cloud", "--credential", "main", "--agent-status", "started", "--format", "json"])
        let added = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let startedAt = (added["agent_started_unix_nano"] as? String).flatMap(Int64.init)
        let stored = try await h.store.machine(id: "m2")
        #expect(startedAt != nil && startedAt == stored?.agentStartedAt?.nanosecondsSinceEpoch, "\(result.stdout)")
        #expect(try await h.stop(controller) == 0)
    }
}
