@_spi(Testing) import Controller
import Core
import Foundation
import Testing
import TestSupport

/// Three real controllers with fake shims on one real PostgreSQL
/// (docs/DESIGN.md §8): the work spreads fairly, a killed controller's
/// pairs fail over, a paused one's writes are refused and it rejoins, a
/// database restart is ridden out; and through all of it the fake clouds'
/// shared call log never shows one pair (or one machine) polled by two
/// controllers at once.
@Suite("Several controllers on one PostgreSQL", .serialized)
struct ClusterTests {
    /// Every machine has been polled: its instance status is running.
    static func allRunning(_ machines: [Machine]) -> Bool {
        !machines.isEmpty && machines.allSatisfy { $0.instanceStatus.state == .running }
    }

    /// Waits until every machine in the store is running (as polled),
    /// following the store's events log.
    static func waitUntilPolled(_ harness: ClusterHarness, expected: Int, _ limit: Duration = .seconds(60)) async throws {
        try await harness.withStore { store in
            try await withTimeout(limit, "every machine polled") {
                let watcher = MachineWatcher(store: store, clock: SystemPollClock(), interval: .milliseconds(100))
                let start = try await store.latestRevision()
                let first = try await store.machines()
                if first.count == expected && allRunning(first) { return }
                for try await _ in watcher.batches(after: start) {
                    let machines = try await store.machines()
                    if machines.count == expected && allRunning(machines) { return }
                }
            }
        }
    }

    @Test("the pairs spread fairly over three controllers and every machine is polled, never by two at once")
    func workSpreadsFairly() async throws {
        try await ClusterHarness.with(credentialsPerProvider: 3, machinesPerPair: 5) { harness in
            try await harness.addMachines()
            for index in 0..<3 { try await harness.start(index) }
            let held = try await harness.waitForLeases([0, 1, 2], "a fair split") { harness.isBalanced($0, among: [0, 1, 2]) }
            #expect(held.values.allSatisfy { $0.count == 2 }, "\(held)")
            try await Self.waitUntilPolled(harness, expected: harness.pairs.count * harness.machinesPerPair)
            // Each controller runs shims only for the providers of its
            // pairs: one it started for a pair it then handed back, it
            // stopped.
            for index in 0..<3 {
                let providers = Set(held[index]!.map(\.provider))
                let lines = harness.controller(index)!.stderrLines.lines
                for provider in ["fake-a", "fake-b"] where !providers.contains(provider) {
                    guard let started = lines.lastIndex(where: { $0.contains("shim started") && logValue("provider", in: $0) == provider }) else { continue }
                    _ = try await harness.controller(index)!.stderrLines.waitForLine(containing: "provider \(provider): stopped", from: started)
                }
            }
            // Any controller answers the CLI for the whole fleet, and status
            // lists the controllers with the pairs each holds.
            for index in 0..<3 {
                let ids = try await harness.cli(["machines", "list", "--ids-only"], controller: index)
                #expect(ids.status == 0, "\(ids.stderr)")
                #expect(ids.stdout.split(separator: "\n").count == 30, "controller \(index) lists \(ids.stdout)")
            }
            let status = try await harness.cli(["status"], controller: 1)
            #expect(status.status == 0, "\(status.stderr)")
            #expect(status.stdout.contains("controllers 3 sharing the store"), "\(status.stdout)")
            for index in 0..<3 {
                let line = try #require(status.stdout.split(separator: "\n").first { $0.contains(ClusterHarness.holder(index)) })
                #expect(line.contains("2 pairs"), "\(line)")
                #expect(line.hasPrefix(index == 1 ? "  *" : "   "), "\(line)")
                for pair in held[index]! { #expect(line.contains(pair.description), "\(line) lacks \(pair)") }
            }
            // Each one's metrics: its leases, the live controllers, no
            // renewal failed and no lease lost; promtool finds nothing.
            let promtool = try Promtool.path()
            for index in 0..<3 {
                let body = try await harness.scrapeMetrics(index)
                let scrape = try Scrape(body)
                #expect(scrape.value("instancepoller_leases_held") == 2, "controller \(index)")
                #expect(scrape.value("instancepoller_cluster_controllers") == 3, "controller \(index)")
                #expect(scrape.value("instancepoller_lease_renewal_failures_total") == 0, "controller \(index)")
                #expect(scrape.value("instancepoller_leases_lost_total") == 0, "controller \(index)")
                #expect(DistFiles.clusterOnlyMetrics.isSubset(of: scrape.names))
                let check = try await Promtool.run(promtool, ["check", "metrics"], stdin: body)
                #expect(check.status == 0 && check.output.isEmpty, "promtool check metrics:\n\(check.output)")
            }
            await harness.stopAll()
            let calls = try harness.calls()
            #expect(!calls.isEmpty)
            #expect(harness.overlaps(calls).isEmpty, "\(harness.overlaps(calls))")
        }
    }

    @Test("kill -9 of a controller: the others poll its pairs within the TTL and a short poll, and no machine is lost")
    func killedControllerFailsOver() async throws {
        // Short-group machines: polling goes on, and a pair's machines are
        // due within a short poll of its takeover.
        try await ClusterHarness.with(credentialsPerProvider: 3, machinesPerPair: 5, leaseTTL: .seconds(3), withAddresses: false) { harness in
            try await harness.addMachines()
            for index in 0..<3 { try await harness.start(index) }
            let held = try await harness.waitForLeases([0, 1, 2], "a fair split") { harness.isBalanced($0, among: [0, 1, 2]) }
            try await Self.waitUntilPolled(harness, expected: 30)
            let orphans = held[2]!
            // Its shims die with it; a survivor may start a shim of its own
            // for a provider it takes over, so survivors are "not these".
            let killedShims = Set(ProcessTree.children(of: harness.controller(2)!.pid))
            let killedAt = ClusterHarness.monotonicNow()
            harness.controller(2)!.kill()
            _ = try await harness.controller(2)!.waitForExit()
            _ = try await harness.waitForLeases([0, 1], "the killed controller's pairs taken over", .seconds(30)) { taken in
                orphans.isSubset(of: taken[0]!.union(taken[1]!))
            }
            // Each orphaned pair's machines are asked about by a survivor.
            let firstCalls = try await withTimeout(.seconds(30), "orphaned pairs polled") {
                while true {
                    let calls = try harness.calls().filter { $0.method == "Instances" && $0.start > killedAt && !killedShims.contains($0.pid) }
                    var first: [String: UInt64] = [:]
                    for call in calls {
                        for id in call.ids where first[id] == nil { first[id] = call.start }
                    }
                    let orphanIDs = orphans.flatMap { pair in (0..<5).map { ClusterHarness.instance(pair, $0) } }
                    if orphanIDs.allSatisfy({ first[$0] != nil }) { return orphanIDs.map { first[$0]! } }
                    _ = try await harness.controller(0)!.stderrLines.waitForLine(
                        containing: "polling a batch", from: harness.controller(0)!.stderrLines.lines.count, .seconds(10))
                }
            }
            // TTL (3 s) + a renewal (1 s) + a short poll (100 ms), with
            // room for a loaded 2-core machine.
            let failover = Duration.nanoseconds(Int64(firstCalls.max()! - killedAt))
            #expect(failover < .seconds(9), "failover took \(failover)")
            let machines = try await harness.withStore { try await $0.machines() }
            #expect(machines.count == 30)
            await harness.stopAll()
            let overlaps = harness.overlaps(try harness.calls(), killedAt: killedAt)
            #expect(overlaps.isEmpty, "\(overlaps)")
        }
    }

    @Test("a controller that stops hands its pairs back at once: the other takes them long before the TTL")
    func stoppedControllerHandsBack() async throws {
        // A TTL long enough that expiry cannot be what hands the pairs over.
        try await ClusterHarness.with(credentialsPerProvider: 2, machinesPerPair: 2, leaseTTL: .seconds(30)) { harness in
            try await harness.addMachines()
            for index in 0..<2 { try await harness.start(index) }
            let held = try await harness.waitForLeases([0, 1], "a fair split") { harness.isBalanced($0, among: [0, 1]) }
            let stopping = harness.controller(1)!
            let stoppedAt = ContinuousClock.now
            #expect(try await harness.stopController(1) == 0)
            #expect(stopping.stderrLines.lines.contains { $0.contains("left the controllers; leases handed back") && $0.contains("leases=2") })
            _ = try await harness.waitForLeases([0], "the stopped controller's pairs taken", .seconds(20)) { taken in
                held[1]!.isSubset(of: taken[0]!)
            }
            #expect(ContinuousClock.now - stoppedAt < .seconds(20))
        }
    }

    @Test("a lease holder paused past its TTL has its writes refused (fencing), then rejoins")
    func pausedHolderIsFencedAndRejoins() async throws {
        // Slow Instances calls: the pause lands while one is in flight, even
        // on a loaded machine. A call starts at most a renewal (1 s) after
        // the last one, so 1.5 s still ends before the 3 s lease runs out:
        // the next holder's calls never overlap it.
        try await ClusterHarness.with(
            credentialsPerProvider: 3, machinesPerPair: 5, leaseTTL: .seconds(3), instancesLatency: "1500ms", withAddresses: false) { harness in
            try await harness.addMachines()
            for index in 0..<3 { try await harness.start(index) }
            let held = try await harness.waitForLeases([0, 1, 2], "a fair split") { harness.isBalanced($0, among: [0, 1, 2]) }
            let paused = harness.controller(0)!
            let mine = held[0]!
            // Freeze it with a batch's call in flight: one its shims have
            // started and not ended, as the shared call log says now (its
            // log lines can reach this test late on a loaded machine, after
            // the call they announce has ended). Checked again at each batch
            // it starts.
            let pausedShims = Set(ProcessTree.children(of: paused.pid))
            try await withTimeout(.seconds(30), "a call of the paused controller's in flight") {
                while true {
                    let from = paused.stderrLines.lines.count
                    let inFlight = try harness.calls().contains { $0.method == "Instances" && $0.end == nil && pausedShims.contains($0.pid) }
                    if inFlight {
                        Foundation.kill(paused.pid, SIGSTOP)
                        return
                    }
                    _ = try await paused.stderrLines.waitForLine(containing: "polling a batch", from: from, .seconds(10))
                }
            }
            let others = try await harness.waitForLeases([1, 2], "the paused controller's pairs taken over", .seconds(30)) { taken in
                mine.isSubset(of: taken[1]!.union(taken[2]!))
            }
            #expect(mine.isSubset(of: others[1]!.union(others[2]!)))
            let resumedFrom = paused.stderrLines.lines.count
            Foundation.kill(paused.pid, SIGCONT)
            // The answer of the call in flight comes back, and the store
            // refuses its write: the epoch moved on (fencing).
            let refused = try await paused.stderrLines.waitForLine(containing: "results were refused", from: resumedFrom, .seconds(30))
            let pair = try #require(logValue("credential", in: refused.line).flatMap(CredentialKey.init(label:)))
            #expect(mine.contains(pair))
            #expect(logValue("epoch", in: refused.line) == "1")
            // It rejoins: the others hand pairs back until all three are even.
            _ = try await harness.waitForLeases([0, 1, 2], "the paused controller rejoined", .seconds(60)) {
                harness.isBalanced($0, among: [0, 1, 2]) && !($0[0] ?? []).isEmpty
            }
            #expect(paused.exitStatusIfExited == nil)
            // Its metrics count the leases it found taken from it.
            _ = try await paused.stderrLines.waitForLine(containing: "lease lost", from: resumedFrom)
            let scrape = try Scrape(try await harness.scrapeMetrics(0))
            let lost = try #require(scrape.value("instancepoller_leases_lost_total"))
            #expect(lost >= 1 && lost <= Double(mine.count), "\(lost) leases lost of \(mine.count)")
            await harness.stopAll()
            let overlaps = harness.overlaps(try harness.calls())
            #expect(overlaps.isEmpty, "\(overlaps)")
        }
    }

    @Test("a database restart mid-run: the controllers reconnect and poll a machine added afterwards")
    func databaseRestartIsRiddenOut() async throws {
        try await ClusterHarness.with(credentialsPerProvider: 2, machinesPerPair: 3, dedicatedCluster: true) { harness in
            try await harness.addMachines()
            for index in 0..<3 { try await harness.start(index) }
            _ = try await harness.waitForLeases([0, 1, 2], "a fair split") { harness.isBalanced($0, among: [0, 1, 2]) }
            try await Self.waitUntilPolled(harness, expected: 12)
            try await harness.cluster.restart()
            // A machine added after the restart (a new instance of an
            // existing pair) is polled by whoever holds its pair.
            let pair = harness.pairs[0]
            try await harness.withStore { store in
                try await store.addMachine(Machine(id: "m-late", provider: pair.provider, credential: pair.name, instanceID: ClusterHarness.instance(pair, 0)))
            }
            try await Self.waitUntilPolled(harness, expected: 13)
            for index in 0..<3 { #expect(harness.controller(index)!.exitStatusIfExited == nil, "controller \(index) exited") }
            // Each renewal the restart failed is counted as it is logged
            // (the counter goes up just before the line is written; none
            // fail once every machine is polled again).
            for index in 0..<3 {
                let failures = try #require(try Scrape(try await harness.scrapeMetrics(index)).value("instancepoller_lease_renewal_failures_total"))
                let log = harness.controller(index)!.stderrLines
                // Each counted failure's line, as it reaches this test.
                var next = 0
                for _ in 0..<Int(failures) {
                    next = try await log.waitForLine(containing: "could not renew leases", from: next).index + 1
                }
                let logged = log.lines.filter { $0.contains("could not renew leases") }.count
                #expect(failures == Double(logged), "controller \(index): \(failures) counted, \(logged) logged")
            }
            await harness.stopAll()
            let overlaps = harness.overlaps(try harness.calls())
            #expect(overlaps.isEmpty, "\(overlaps)")
        }
    }
}
