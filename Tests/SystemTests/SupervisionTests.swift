import Controller
import Support
import ControlAPI
import Core
import Foundation
import SwiftProtobuf
import Testing
import TestSupport

/// docs/DESIGN.md §6.4 with the real binaries as processes: `instancepoller run`
/// supervising `provider-shim fake` and the C shim fixture.
@Suite("Shim supervision with the real binaries")
struct SupervisionTests {
    static let addressesA: [(id: String, address: String)] = [("c-1", "10.1.0.1"), ("c-2", "10.1.0.2"), ("c-3", "10.1.0.3"), ("c-4", "10.1.0.4")]

    @Test func aShimKilledMidBatchIsRestartedAndTheMachinesConverge() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        // The first shim's Instances calls never answer (a hang fault), so
        // the kill lands in a call however late a loaded machine sends it
        // (a 3 s answer was once too short). The shims after it (the
        // restart) serve the same instances without the fault: the first
        // start alone makes the directory `first-start` (mkdir is atomic),
        // and `exec` keeps the shim's pid the one the controller started.
        let hanging = try h.scenario("hanging", ControllerHarness.runningInstances(Self.addressesA, extra: """
            faults:
              - kind: hang
                methods: [Instances]

            """))
        let plain = try h.scenario("plain", ControllerHarness.runningInstances(Self.addressesA))
        let shim = BuiltProducts.path(of: "provider-shim")
        let provider = """
              cloud:
                shim:
                  command: /bin/sh
                  args: ["-c", "if mkdir '\(h.directory.file("first-start"))' 2>/dev/null; then exec '\(shim)' fake --scenario '\(hanging)'; fi; exec '\(shim)' fake --scenario '\(plain)'"]
                cloud:
                  type: fake
            """
        // The call's own deadline must not end it first.
        let settings = ControllerHarness.fastSettings.replacingOccurrences(of: "call_timeout: 10s", with: "call_timeout: 120s")
        try h.writeConfig(providers: [provider], settings: settings)
        let controller = try await h.start()
        let started = try await controller.stderrLines.waitForLine(containing: "shim started")
        let firstShim = try #require(logValue("pid", in: started.line).flatMap(Int32.init))
        #expect(ProcessTree.children(of: controller.pid) == [firstShim])

        for (index, entry) in Self.addressesA.enumerated() {
            try await h.add("m\(index + 1)", provider: "cloud", instance: entry.id)
        }
        let batch = try await controller.stderrLines.waitForLine(containing: "polling a batch", from: started.index)
        kill(firstShim, SIGKILL)

        // The batch in flight is cut off (other batches may find the shim
        // gone first and log the outage before it; the cut is then at debug).
        try await controller.stderrLines.waitForLine(from: batch.index, "the kill to land in the Instances call") {
            $0.contains("provider=cloud") && $0.contains("the shim went away during the call")
        }
        try await controller.stderrLines.waitForLine(containing: "shim down", from: batch.index)
        try await controller.stderrLines.waitForLine(containing: "restarting shim", from: batch.index)
        let restarted = try await controller.stderrLines.waitForLine(containing: "shim started", from: batch.index)
        let secondShim = try #require(logValue("pid", in: restarted.line).flatMap(Int32.init))
        #expect(secondShim != firstShim)

        let machines = try await h.waitForMachines("every machine to converge after the restart") { machines in
            machines.count == 4 && machines.values.allSatisfy { $0.instanceStatus.state == .running && !$0.addresses.isEmpty }
        }
        for (index, entry) in Self.addressesA.enumerated() {
            let machine = try #require(machines["m\(index + 1)"], "no machine is lost")
            #expect(machine.addressValues == [entry.address])
            #expect(machine.pollError == nil)
        }
        #expect(!ProcessTree.isAlive(firstShim))
        #expect(controller.exitStatusIfExited == nil, "the controller stayed up")
        #expect(try await h.stop(controller) == 0)
    }

    @Test func aShimThatCrashesAtStartBacksOffAndTheRestGoesOn() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("good", ControllerHarness.runningInstances([("c-1", "10.1.0.1")]))
        let broken = ControllerHarness.failingProvider("broken", problem: "cloud SDK exploded: no region", status: 7)
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario), broken])
        let controller = try await h.start()
        try await h.add("good-1", provider: "cloud", instance: "c-1")
        try await h.add("stuck-1", provider: "broken", instance: "c-1")

        let failed = try await controller.stderrLines.waitForLine(from: 0, "a failed start of broken") {
            $0.contains("shim failed to start") && $0.contains("provider=broken")
        }
        #expect(failed.line.contains("exited with status 7 before its handshake line"))
        #expect(failed.line.contains("cloud SDK exploded: no region"), "the error quotes the shim's stderr")

        // 1 s doubling to 30 s in production; here 100 ms doubling to 400 ms.
        var backoffs: [String] = []
        var from = 0
        for _ in 0..<5 {
            let line = try await controller.stderrLines.waitForLine(from: from, "a restart of broken") {
                $0.contains("restarting shim") && $0.contains("provider=broken")
            }
            backoffs.append(logValue("after", in: line.line) ?? "?")
            from = line.index + 1
        }
        #expect(backoffs == ["0.1 seconds", "0.2 seconds", "0.4 seconds", "0.4 seconds", "0.4 seconds"])

        let machines = try await h.waitForMachines("the good provider's machine to converge") { machines in
            machines["good-1"]?.addressValues == ["10.1.0.1"]
        }
        let stuck = try #require(machines["stuck-1"], "the broken provider's machine is kept")
        #expect(stuck.instanceStatus.state == .unspecified)
        #expect(stuck.pollError == nil, "a down shim is not recorded as the cloud's answer")
        let unavailable = controller.stderrLines.lines.filter { $0.contains("provider unavailable") && $0.contains("provider=broken") }
        #expect(unavailable.count == 1, "said once, not on every retry")
        #expect(controller.exitStatusIfExited == nil, "the controller stays up")
        #expect(try await h.stop(controller) == 0)
    }

    enum SwapTarget: String, CaseIterable, CustomTestStringConvertible {
        case anotherFakeScenario = "fake"
        case cShim = "c-shim"
        var testDescription: String { rawValue }
    }

    @Test(arguments: SwapTarget.allCases)
    func aLiveSwapFailsNoBatchAndMissesNoPoll(to target: SwapTarget) async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenarioA = try h.scenario("a", ControllerHarness.runningInstances([("c-1", "10.1.0.1"), ("c-2", "10.1.0.2")]))
        // A pending agent keeps the machines in the short group; factor 1
        // keeps their interval at 100 ms: polling never stops.
        let settings = ControllerHarness.fastSettings
            .replacingOccurrences(of: "short_poll_cap: 400ms", with: "short_poll_cap: 100ms\n  backoff_factor: 1")
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenarioA)], settings: settings)
        let controller = try await h.start()
        try await h.add("m1", provider: "cloud", instance: "c-1", agent: .pending)
        try await h.add("m2", provider: "cloud", instance: "c-2", agent: .pending)
        try await h.waitForMachines("the machines to carry backend A's addresses") {
            $0["m1"]?.addressValues == ["10.1.0.1"] && $0["m2"]?.addressValues == ["10.1.0.2"]
        }
        let oldShim = try #require(try await h.waitForShims(controller, count: 1).first)
        let before = controller.stderrLines.lines.count

        let want: (m1: String, m2: String)
        switch target {
        case .anotherFakeScenario:
            let scenarioB = try h.scenario("b", ControllerHarness.runningInstances([("c-1", "10.2.0.1"), ("c-2", "10.2.0.2")]))
            try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenarioB)], settings: settings)
            want = ("10.2.0.1", "10.2.0.2")
        case .cShim:
            try h.writeConfig(providers: [h.cProvider("cloud", binary: try await CShimFixture.binary())], settings: settings)
            want = ("10.9.0.11", "10.9.0.12")  // the C shim's static cloud
        }
        kill(controller.pid, SIGHUP)
        let swapped = try await controller.stderrLines.waitForLine(containing: "shim swapped", from: before)
        let newShim = try #require(logValue("pid", in: swapped.line).flatMap(Int32.init))

        try await h.waitForMachines("the machines to carry the new backend's addresses") {
            $0["m1"]?.addressValues.contains(want.m1) == true && $0["m2"]?.addressValues.contains(want.m2) == true
        }
        // Polling goes on at its pace on the new shim.
        var last = swapped.index
        for _ in 0..<5 {
            last = try await controller.stderrLines.waitForLine(containing: "polling a batch", from: last + 1).index
        }
        #expect(await ProcessWatch.waitForExit(pid: oldShim, limit: .seconds(10)), "the old shim was stopped")
        #expect(ProcessTree.children(of: controller.pid) == [newShim])

        let lines = Array(controller.stderrLines.lines[before...])
        let failures = lines.filter {
            $0.contains("provider call failed") || $0.contains("provider unavailable") || $0.contains("shim down")
                || $0.contains("swap refused") || $0.contains("poll round failed")
        }
        #expect(failures.isEmpty, "zero failed batches: \(failures)")
        // Zero missed polls: batches kept coming every ~100 ms through the swap.
        let batchTimes = lines.filter { $0.contains("polling a batch") }.compactMap(logTime)
        let gaps = zip(batchTimes.dropFirst(), batchTimes).map { $0.timeIntervalSince($1) }
        #expect(batchTimes.count >= 5)
        #expect((gaps.max() ?? 0) < 1.5, "the longest pause between batches was \(gaps.max() ?? 0) s")
        let machines = try await h.store.machines()
        #expect(machines.allSatisfy { $0.pollError == nil })
        #expect(try await h.stop(controller) == 0)
    }

    @Test func sigtermStopsEveryShimRemovesTheSocketsAndClosesTheStore() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("a", ControllerHarness.runningInstances([("c-9", "10.1.0.9")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario), h.cProvider("c", binary: try await CShimFixture.binary())])
        let controller = try await h.start()
        try await h.add("fake-1", provider: "cloud", instance: "c-9")
        try await h.add("c-1", provider: "c", instance: "c-1")
        try await h.waitForMachines("both providers' machines to converge") {
            $0["fake-1"]?.addressValues == ["10.1.0.9"] && $0["c-1"]?.addressValues.contains("10.9.0.11") == true
        }
        let shims = try await h.waitForShims(controller, count: 2)
        #expect(ProcessTree.children(of: controller.pid) == shims)
        #expect(h.runtimeEntries().filter { $0.hasSuffix(".sock") }.count == 3, "two shims and the control API")

        #expect(try await h.stop(controller) == 0)
        for shim in shims { #expect(!ProcessTree.isAlive(shim), "shim \(shim) outlived the controller") }
        #expect(h.processesOfThisTest().isEmpty, "no process of the group remains")
        #expect(h.runtimeEntries().isEmpty, "sockets and lock removed: \(h.runtimeEntries())")
        _ = try await controller.output()
        let log = controller.stderrLines.lines
        #expect(log.contains { $0.contains("shutting down") && $0.contains("reason=shutdownCall") }, "the fake shim was asked to shut down")
        let shimsStopped = try #require(log.firstIndex { $0.contains("all shims stopped") })
        let storeClosed = try #require(log.firstIndex { $0.contains("machine store closed") })
        #expect(shimsStopped < storeClosed, "the store is closed last")
        #expect(log[storeClosed...].contains { $0.contains("controller stopped") })
        #expect(try await h.store.machines().count == 2)
    }

    /// Writes a config with one fake provider whose cloud runs instance
    /// c-1 at 10.1.0.1; returns the scenario's path.
    @discardableResult
    static func oneCloud(_ h: ControllerHarness, provider: String = "cloud", settings: String = ControllerHarness.fastSettings) throws -> String {
        let scenario = try h.scenario("a", ControllerHarness.runningInstances([("c-1", "10.1.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider(provider, scenario: scenario)], settings: settings)
        return scenario
    }

    /// A reload that names other providers stops the removed one's shim
    /// and supervises the new one's, which the stop at the end takes down
    /// with the rest.
    @Test func aReloadStartsANewProviderAndStopsARemovedOne() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try Self.oneCloud(h, provider: "old")
        let controller = try await h.start()
        let oldShim = try #require(try await h.waitForShims(controller, count: 1).first)
        let before = controller.stderrLines.lines.count

        try h.writeConfig(providers: [h.fakeProvider("new", scenario: scenario)])
        kill(controller.pid, SIGHUP)
        let reloaded = try await controller.stderrLines.waitForLine(containing: "config reloaded", from: before)
        #expect(logValue("changes", in: reloaded.line) == "2", "\(reloaded.line)")
        let lines = controller.stderrLines.lines[before...]
        #expect(lines.contains { $0.contains("provider old: stopped") })
        #expect(lines.contains { $0.contains("provider new: started") })
        #expect(await ProcessWatch.waitForExit(pid: oldShim, limit: .seconds(10)), "the removed provider's shim was stopped")
        let newShim = try #require(try await h.waitForShims(controller, count: 1, from: before).first)
        try await h.add("m1", provider: "new", instance: "c-1")
        try await h.waitForMachines("the new provider's machine to be polled") { $0["m1"]?.addressValues == ["10.1.0.1"] }
        #expect(ProcessTree.children(of: controller.pid) == [newShim])

        #expect(try await h.stop(controller) == 0)
        #expect(!ProcessTree.isAlive(newShim), "the new provider's shim is stopped with the rest")
        #expect(h.processesOfThisTest().isEmpty)
    }

    /// An `Events` long poll (what `watch` waits in) does not hold the stop:
    /// the control server drains for two seconds at most, then cuts it off.
    @Test func anEventsLongPollDoesNotHoldTheStop() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try Self.oneCloud(h)
        let controller = try await h.start()
        let client = try await RawConnection(unixSocketPath: "\(h.runtimeDirectory)/\(ControlV1.socketName)")
        // Frames are served in order: once Status is answered, the poll
        // (nothing after this revision, 30 s to wait) is in flight.
        let poll = Instancepoller_Control_V1_EventsRequest.with {
            $0.afterRevision = 1 << 40
            $0.waitNano = Duration.seconds(30).totalNanoseconds
        }
        try await client.sendRequest(
            RequestEnvelope(service: ControlV1.serviceName, method: "Events", payload: try poll.serializedBuffer()), streamID: 1
        )
        try await client.sendRequest(
            RequestEnvelope(
                service: ControlV1.serviceName, method: "Status", payload: try Instancepoller_Control_V1_StatusRequest().serializedBuffer()
            ),
            streamID: 3
        )
        let status = try await client.nextResponse()
        #expect(status.streamID == 3 && status.1.error == nil)

        let stopping = ContinuousClock.now
        #expect(try await h.stop(controller) == 0)
        let took = ContinuousClock.now - stopping
        #expect(took < .seconds(9), "the stop took \(took): it waited for the poll")
        #expect(try await client.next() == nil, "the poll was cut off, not answered")
    }

    /// A SIGTERM while the controller is still starting (the control socket
    /// is bound, the group may not run yet) is neither fatal nor lost: it
    /// stops cleanly, whichever side of the group's own trap it falls on.
    @Test func aSigtermDuringTheStartStopsTheControllerCleanly() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try Self.oneCloud(h)
        let controller = try await ChildProcess.spawn(
            BuiltProducts.path(of: "instancepoller"), ["run", "--config", h.configPath, "--log-level", "debug"]
        )
        defer { if controller.exitStatusIfExited == nil { controller.kill() } }
        try await controller.stderrLines.waitForLine(containing: "listening")
        controller.terminate()
        #expect(try await controller.waitForExit(.seconds(30)) == 0)
        _ = try await controller.output()
        #expect(controller.stderrLines.lines.last?.contains("controller stopped") == true, "\(controller.stderrLines.lines.suffix(5))")
        #expect(h.runtimeEntries().isEmpty, "sockets and lock removed: \(h.runtimeEntries())")
        #expect(h.processesOfThisTest().isEmpty, "no shim outlives the controller")
    }

    /// The controller is one service group: each service starts once the one
    /// before it has (the store first, the control server last) and they
    /// stop in reverse, the servers first and the store last.
    @Test func theServicesStartInDependencyOrderAndStopInReverse() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try Self.oneCloud(h, settings: ControllerHarness.fastSettings + "\nmetrics:\n  address: 127.0.0.1:0")
        let controller = try await h.start()
        try await h.add("m1", provider: "cloud", instance: "c-1")
        try await h.waitForMachines("the machine to be polled through the shim") { $0["m1"]?.addressValues == ["10.1.0.1"] }
        // A client of each server that has sent nothing: the stop closes both.
        let serving = try await controller.stderrLines.waitForLine(containing: "serving metrics")
        let port = try #require(logValue("address", in: serving.line)?.split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) })
        let idle = try await SocketFiles.connect("\(h.runtimeDirectory)/control.sock", count: 1) + SocketFiles.connectTCP(port: port, count: 1)
        defer { for descriptor in idle { close(descriptor) } }
        #expect(try await h.stop(controller) == 0)
        #expect(await SocketFiles.waitForPeerCloses(idle, count: idle.count) == Set(idle), "the servers closed their idle connections")
        _ = try await controller.output()
        let log = controller.stderrLines.lines
        func services(_ message: String) -> [String] {
            log.filter { logValue("msg", in: $0) == message }.compactMap { logValue("service", in: $0) }
        }
        let order = ["store", "shims", "poller", "signals", "metrics", "control"]
        #expect(services("starting service") == order)
        #expect(services("stopping service") == order.reversed())
        #expect(services("service stopped") == order.reversed())
        // Each starts after the one before it, and stops before it begins to stop.
        let index = { (message: String, service: String) in
            log.firstIndex { logValue("msg", in: $0) == message && logValue("service", in: $0) == service }
        }
        let started = try #require(log.firstIndex { $0.contains("controller started") })
        #expect(order.allSatisfy { (index("starting service", $0) ?? .max) < started }, "everything started before it says so")
        for (earlier, later) in zip(order, order.dropFirst()) {
            let laterStopped = try #require(index("service stopped", later))
            let earlierStopping = try #require(index("stopping service", earlier))
            #expect(laterStopped < earlierStopping, "\(later) stopped before \(earlier) began to stop")
        }
        // The shims stop with their service; the store closes with its own.
        let shimsStopped = try #require(log.firstIndex { $0.contains("all shims stopped") })
        #expect(try #require(index("stopping service", "shims")) < shimsStopped)
        #expect(shimsStopped < (try #require(index("service stopped", "shims"))))
        let storeClosed = try #require(log.firstIndex { $0.contains("machine store closed") })
        #expect(try #require(index("stopping service", "store")) < storeClosed)
        #expect(storeClosed < (try #require(index("service stopped", "store"))))
    }

    @Test func afterKillNineEveryShimExitsAndARestartCleansUpAndGoesOn() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("a", ControllerHarness.runningInstances([("c-9", "10.1.0.9"), ("c-8", "10.1.0.8")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario), h.cProvider("c", binary: try await CShimFixture.binary())])
        let first = try await h.start()
        try await h.add("fake-1", provider: "cloud", instance: "c-9")
        try await h.waitForMachines("the first machine to converge") { $0["fake-1"]?.addressValues == ["10.1.0.9"] }
        let shims = try await h.waitForShims(first, count: 2)
        #expect(ProcessTree.children(of: first.pid) == shims)

        first.kill()
        _ = try await first.waitForExit()
        let clock = ContinuousClock()
        let killed = clock.now
        for shim in shims {
            #expect(await ProcessWatch.waitForExit(pid: shim, limit: .seconds(2)), "shim \(shim) still runs 2 s after the controller died")
            #expect(!FileManager.default.fileExists(atPath: "/proc/\(shim)/stat") || !ProcessTree.isAlive(shim))
        }
        let exitedWithin = clock.now - killed
        #expect(exitedWithin < .seconds(2))

        // A socket left behind by a dead process, as after a crash.
        SocketFiles.bindAndAbandon("\(h.runtimeDirectory)/leftover.sock")
        let second = try await h.start()
        try await second.stderrLines.waitForLine(containing: "removed a stale socket")
        #expect(second.stderrLines.lines.contains { $0.contains("leftover.sock") })
        try await h.add("fake-2", provider: "cloud", instance: "c-8")
        try await h.add("c-1", provider: "c", instance: "c-1")
        try await h.waitForMachines("old and new machines to be polled after the restart") {
            $0["fake-1"]?.addressValues == ["10.1.0.9"] && $0["fake-2"]?.addressValues == ["10.1.0.8"]
                && $0["c-1"]?.addressValues.contains("10.9.0.11") == true
        }
        #expect(ProcessTree.children(of: second.pid) == (try await h.waitForShims(second, count: 2)))
        #expect(try await h.stop(second) == 0)
        #expect(h.runtimeEntries().isEmpty)
    }
}

/// What an operator gets wrong, the controller says, and keeps running.
@Suite("Controller process: refusals")
struct ControllerRefusalTests {
    @Test func aFailingNewShimOrABadConfigOnReloadLeavesTheOldShimServing() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("a", ControllerHarness.runningInstances([("c-1", "10.1.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        let controller = try await h.start()
        let started = try await controller.stderrLines.waitForLine(containing: "shim started")
        let shim = try #require(logValue("pid", in: started.line).flatMap(Int32.init))

        // A config with an error: nothing changes.
        try "providers:\n  cloud:\n    shim: {command: 42x}\n    cloud: {}\n".write(toFile: h.configPath, atomically: true, encoding: .utf8)
        kill(controller.pid, SIGHUP)
        let bad = try await controller.stderrLines.waitForLine(containing: "config not reloaded")
        #expect(bad.line.contains("config.yaml:3:"), "the error names the file and line: \(bad.line)")

        // A new shim that dies at start: the swap is refused, the old shim serves on.
        let broken = ControllerHarness.failingProvider("cloud", problem: "bad build", status: 3)
        try h.writeConfig(providers: [broken])
        kill(controller.pid, SIGHUP)
        let refused = try await controller.stderrLines.waitForLine(containing: "swap refused", from: bad.index)
        #expect(refused.line.contains("bad build"), "says why: \(refused.line)")
        #expect(ProcessTree.children(of: controller.pid) == [shim])
        try await h.add("m1", provider: "cloud", instance: "c-1")
        try await h.waitForMachines("the old shim to keep serving") { $0["m1"]?.addressValues == ["10.1.0.1"] }
        #expect(try await h.stop(controller) == 0)
    }

    @Test func aSecondControllerOnTheSameRuntimeDirectoryIsRefused() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("a", ControllerHarness.runningInstances([("c-1", "10.1.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        let first = try await h.start()
        try await first.stderrLines.waitForLine(containing: "shim started")
        let second = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), ["run", "--config", h.configPath])
        #expect(try await second.waitForExit() == 1)
        let output = try await second.output()
        #expect(output.stderr.contains("instancepoller: runtime directory \(h.runtimeDirectory) is in use by another controller (pid \(first.pid))"))
        #expect(ProcessTree.children(of: first.pid).count == 1, "the first one is untouched")
        #expect(try await h.stop(first) == 0)
    }

    @Test func aBadConfigExitsTwoWithTheFileAndLine() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try "store: x.db\nproviders:\n  cloud:\n    shim: {command: /nonexistent/shim}\n    cloud: {type: fake}\n"
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        let controller = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), ["run", "--config", h.configPath])
        #expect(try await controller.waitForExit() == 2)
        let output = try await controller.output()
        #expect(output.stderr == "instancepoller: \(h.configPath):4:21: providers.cloud.shim.command: no executable \"/nonexistent/shim\" (looked /nonexistent/shim)\n")
        #expect(!FileManager.default.fileExists(atPath: h.directory.file("x.db")), "nothing was created")
    }
}
