import Controller
import Support
import Core
import Foundation
import GRDB
import Logging
import NIOCore
import SwiftProtobuf
import Testing
import TestSupport
import ControlAPI

/// Faults injected into the real processes: shims and the controller killed
/// at random points, a shim that hangs, a flood of dripping clients, and
/// oversized or garbage frames on both sockets. Nothing may crash, no
/// machine may be lost, no process may be orphaned.
///
/// The repeat counts are small here so the suite fits in CI;
/// `scripts/faults` runs the same tests with the full counts (100 shim
/// kills, 20 controller kills) and prints what they measured.
@Suite("Fault injection with the real binaries")
struct FaultInjectionTests {
    /// A count from the environment (set by scripts/faults), else `fallback`.
    static func count(_ name: String, _ fallback: Int) -> Int {
        ProcessInfo.processInfo.environment[name].flatMap(Int.init) ?? fallback
    }

    /// Appends one JSON line of figures to `$FAULT_REPORT`, when it is set.
    static func report(_ fault: String, _ figures: [String: Int]) {
        guard let path = ProcessInfo.processInfo.environment["FAULT_REPORT"] else { return }
        var record: [String: Any] = ["fault": fault]
        for (key, value) in figures { record[key] = value }
        guard let data = try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]),
              let handle = FileHandle(forWritingAtPath: path) ?? {
                  FileManager.default.createFile(atPath: path, contents: nil)
                  return FileHandle(forWritingAtPath: path)
              }()
        else { return }
        handle.seekToEndOfFile()
        handle.write(data + Data("\n".utf8))
        try? handle.close()
    }

    /// A random generator whose seed is printed, so a failing run can be
    /// told apart from the next one.
    static func generator(_ test: String) -> SplitMix64 {
        let seed = UInt64.random(in: 1...UInt64.max)
        print("\(test): random seed \(seed)")
        return SplitMix64(seed: seed)
    }

    static let instances: [(id: String, address: String)] = (1...40).map { ("i-\($0)", "10.2.0.\($0)") }

    @Test func childrenOfTheTestsStartWithNoSignalBlocked() async throws {
        let child = try await ChildProcess.spawn("/bin/sh", ["-c", "grep '^SigBlk' /proc/self/status"])
        #expect(try await child.waitForExit() == 0)
        let output = try await child.output()
        #expect(output.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "SigBlk:\t0000000000000000")
    }

    @Test func aShimKilledAtRandomPointsLosesNoMachineAndLeavesNoProcess() async throws {
        let kills = Self.count("FAULT_SHIM_KILLS", 10)
        var random = Self.generator("shim kills")
        let h = try ControllerHarness()
        defer { h.remove() }
        // Calls take a while, and the machines' agents never start, so
        // they stay in the short poll group: a batch is in flight much of
        // the time and many kills land inside one.
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances(Self.instances, extra: """
            faults:
              - kind: latency
                methods: [Instances, NetworkInterfaces]
                delay: 150ms

            """))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        let controller = try await h.start()
        var started = try await controller.stderrLines.waitForLine(containing: "shim started")
        var shim = try #require(logValue("pid", in: started.line).flatMap(Int32.init))
        for (index, entry) in Self.instances.enumerated() {
            try await h.add("m\(index + 1)", provider: "cloud", instance: entry.id, agent: .pending)
        }

        var killed: [Int32] = []
        // Where a kill lands, picked at random each round: right after the
        // handshake, inside a batch's calls, or between two batches.
        let killPoints = ["shim started", "polling a batch", "batch polled"]
        for round in 1...kills {
            let point = killPoints.randomElement(using: &random)!
            if point != "shim started" {
                try await controller.stderrLines.waitForLine(containing: point, from: started.index)
            }
            kill(shim, SIGKILL)
            killed.append(shim)
            let previous = shim
            started = try await controller.stderrLines.waitForLine(from: started.index, "the restart after kill \(round)") {
                $0.contains("shim started") && logValue("pid", in: $0) != "\(previous)"
            }
            shim = try #require(logValue("pid", in: started.line).flatMap(Int32.init))
        }

        let machines = try await h.waitForMachines("every machine to converge after \(kills) kills") { machines in
            machines.count == Self.instances.count
                && machines.values.allSatisfy { $0.instanceStatus.state == .running && !$0.addresses.isEmpty && $0.pollError == nil }
        }
        for (index, entry) in Self.instances.enumerated() {
            #expect(machines["m\(index + 1)"]?.addressValues == [entry.address], "no machine is lost or wrong")
        }
        for pid in killed {
            #expect(await ProcessWatch.waitForExit(pid: pid, limit: .seconds(2)), "killed shim \(pid) was reaped")
        }
        #expect(ProcessTree.children(of: controller.pid) == [shim], "one shim runs, the one last started")
        #expect(controller.exitStatusIfExited == nil, "the controller stayed up")
        let cutCalls = controller.stderrLines.lines.count { $0.contains("the shim went away during the call") }
        #expect(try await h.stop(controller) == 0)
        #expect(h.processesOfThisTest().isEmpty, "no process outlives the controller")
        #expect(h.runtimeEntries().isEmpty)
        Self.report("shim-kill-9", ["kills": kills, "calls_cut": cutCalls, "machines": machines.count, "machines_lost": Self.instances.count - machines.count, "orphans": h.processesOfThisTest().count])
    }

    @Test func theControllerKilledMidBatchKeepsAWholeStoreAndARestartConverges() async throws {
        let kills = Self.count("FAULT_CONTROLLER_KILLS", 3)
        let perRound = 250
        var random = Self.generator("controller kills")
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("fleet", """
            name: fleet
            fleets:
              - prefix: f-
                count: \(perRound * (kills + 1))
                interfaces: 1
                timeline:
                  - {at: 0s, state: running, raw_status: running}

            """)
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])

        var added = 0
        func addRound() async throws {
            // Fleet members are numbered from 1.
            let machines = ((added + 1)...(added + perRound)).map {
                Machine(id: "m\($0)", provider: "cloud", credential: "main", instanceID: "f-\($0)")
            }
            try await h.store.addMachines(machines)
            added += perRound
        }

        var killedMidWrite = 0
        for round in 1...kills {
            // New machines each round, so that every batch has results to write.
            try await addRound()
            let controller = try await h.start()
            // The kill lands as the first or second batch goes out:
            // its calls in flight, its results about to be written.
            let batches = Int.random(in: 1...2, using: &random)
            var batch = (index: -1, line: "")
            for _ in 1...batches {
                batch = try await controller.stderrLines.waitForLine(containing: "polling a batch", from: batch.index + 1)
            }
            let shims = controller.stderrLines.lines.compactMap { line in
                line.contains("shim started") ? logValue("pid", in: line).flatMap(Int32.init) : nil
            }
            controller.kill()
            _ = try await controller.waitForExit()
            if controller.stderrLines.lines.count(where: { $0.contains("polling a batch") }) > controller.stderrLines.lines.count(where: { $0.contains("batch polled") }) {
                killedMidWrite += 1
            }
            for shim in shims {
                #expect(await ProcessWatch.waitForExit(pid: shim, limit: .seconds(2)), "round \(round): shim \(shim) outlived the controller")
            }

            let check = try Self.integrityCheck(h.storePath)
            #expect(check == ["ok"], "round \(round): the store is whole after kill -9")
            #expect(try await h.store.machines().count == added, "round \(round): no machine is lost")
        }

        let controller = try await h.start()
        let total = added
        try await h.waitForMachines("all \(total) machines to converge after \(kills) kills", .seconds(60)) { machines in
            machines.count == total && machines.values.allSatisfy { $0.instanceStatus.state == .running && !$0.addresses.isEmpty }
        }
        #expect(try await h.stop(controller) == 0)
        #expect(try Self.integrityCheck(h.storePath) == ["ok"])
        #expect(h.processesOfThisTest().isEmpty)
        Self.report("controller-kill-9", ["kills": kills, "machines": total, "integrity_ok": kills + 1, "killed_with_batch_in_flight": killedMidWrite])
    }

    static func integrityCheck(_ path: String) throws -> [String] {
        var configuration = Configuration()
        configuration.readonly = true
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        defer { try? queue.close() }
        return try queue.read { try String.fetchAll($0, sql: "PRAGMA integrity_check") }
    }

    @Test func aHungShimRunsIntoTheDeadlineAndIsReplaced() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances(Array(Self.instances.prefix(3))))
        // The call deadline is shorter than three failed health checks, so a
        // batch meets the hang before the supervisor gives up on the shim.
        let settings = """
            poll:
              short_poll: 100ms
              short_poll_cap: 400ms
              call_timeout: 500ms
            supervision:
              health_interval: 300ms
              health_timeout: 300ms
              initial_backoff: 100ms
              max_backoff: 400ms
              drain_timeout: 1s
              exit_grace: 500ms
            """
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)], settings: settings)
        let controller = try await h.start()
        let started = try await controller.stderrLines.waitForLine(containing: "shim started")
        let hung = try #require(logValue("pid", in: started.line).flatMap(Int32.init))
        try await h.add("m1", provider: "cloud", instance: "i-1")
        try await h.waitForMachines("m1 to converge") { $0["m1"]?.addressValues == ["10.2.0.1"] }

        // The shim stops answering anything, its socket still open.
        let hangAt = ContinuousClock.now
        kill(hung, SIGSTOP)
        let hangStart = controller.stderrLines.lines.count
        try await h.add("m2", provider: "cloud", instance: "i-2")
        let deadline = try await controller.stderrLines.waitForLine(from: hangStart, "a call to meet its deadline") {
            $0.contains("provider call failed") && $0.contains("DeadlineExceeded")
        }
        let down = try await controller.stderrLines.waitForLine(containing: "shim down", from: hangStart)
        #expect(down.line.contains("health"), "the hang is found by the health checks: \(down.line)")
        let restarted = try await controller.stderrLines.waitForLine(from: deadline.index, "a new shim") {
            $0.contains("shim started") && logValue("pid", in: $0) != "\(hung)"
        }
        let fresh = try #require(logValue("pid", in: restarted.line).flatMap(Int32.init))
        let replacedAfter = ContinuousClock.now - hangAt
        #expect(await ProcessWatch.waitForExit(pid: hung, limit: .seconds(5)), "the hung shim was killed and reaped")

        let machines = try await h.waitForMachines("both machines to converge after the hang") {
            $0["m1"]?.addressValues == ["10.2.0.1"] && $0["m2"]?.addressValues == ["10.2.0.2"] && $0["m2"]?.pollError == nil
        }
        #expect(machines.count == 2)
        #expect(ProcessTree.children(of: controller.pid) == [fresh])
        #expect(try await h.stop(controller) == 0)
        #expect(h.processesOfThisTest().isEmpty)
        Self.report("hung-shim", ["replaced_after_ms": Int(replacedAfter / .milliseconds(1)), "machines": machines.count])
    }

    @Test func aThousandDrippingConnectionsDoNotStopTheControllerAndLeaveNoDescriptorBehind() async throws {
        let connections = Self.count("FAULT_DRIP_CONNECTIONS", 1_000)
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances(Array(Self.instances.prefix(2))))
        // Room for every dripper (the default cap is 256), and for the
        // whole test before their unfinished frames time out.
        try h.writeConfig(
            providers: [h.fakeProvider("cloud", scenario: scenario)],
            settings: ControllerHarness.fastSettings + "\nlimits: {control_connections: \(connections + 100), frame_timeout: 120s}"
        )
        // The soft descriptor limit most services start with; the
        // controller raises it to the hard limit itself.
        let controller = try await h.start(limitingDescriptorsTo: 1_024)
        try await h.add("m1", provider: "cloud", instance: "i-1")
        try await h.waitForMachines("m1 to converge") { $0["m1"]?.addressValues == ["10.2.0.1"] }
        let baseline = ProcessTree.openDescriptors(of: controller.pid)

        let socket = "\(h.runtimeDirectory)/control.sock"
        var drippers = try await SocketFiles.connect(socket, count: connections)
        defer { for fd in drippers { close(fd) } }
        // Each sends part of a frame header, a byte at a time, and never
        // finishes it.
        let sent = await onOwnThread { [drippers] in
            var sent = 0
            for round in 0..<3 {
                for fd in drippers {
                    var byte: UInt8 = round == 0 ? 0 : 0x10
                    if send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 { sent += 1 }
                }
            }
            return sent
        }
        #expect(sent == 3 * connections)
        // The controller goes on: the CLI is answered and polling continues.
        // Connections are accepted in order, so once the CLI's is served
        // every dripper's is held too.
        let status = try await h.cli(["status"])
        #expect(status.status == 0, "status answered with \(connections) dripping clients: \(status.stderr)")
        #expect(ProcessTree.openDescriptors(of: controller.pid) >= baseline + connections, "the controller holds every connection")
        let limits = ProcessTree.descriptorLimits(of: controller.pid)
        #expect(limits != nil && limits?.soft == limits?.hard, "the controller raised its descriptor limit from 1024: \(String(describing: limits))")
        try await h.add("m2", provider: "cloud", instance: "i-2")
        try await h.waitForMachines("m2 to converge with the drippers connected") { $0["m2"]?.addressValues == ["10.2.0.2"] }
        let listed = try await h.cli(["machines", "list", "--format", "json"])
        #expect(listed.status == 0 && listed.stdout.contains("\"m2\""))

        // Each dripper hangs up its side and waits for the controller to
        // close the connection (end of file, within 10 s).
        let closedByController = await onOwnThread { [drippers] in
            var closed = 0
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            for fd in drippers {
                shutdown(fd, Int32(SHUT_WR))
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                var byte: UInt8 = 0
                if recv(fd, &byte, 1, 0) == 0 { closed += 1 }
                close(fd)
            }
            return closed
        }
        drippers.removeAll()
        #expect(closedByController == connections, "the controller closed every dripper's connection")
        let left = ProcessTree.openDescriptors(of: controller.pid) - baseline
        #expect(left <= 2, "the controller released the connections' descriptors (\(left) over the baseline)")
        #expect(controller.exitStatusIfExited == nil)
        #expect(try await h.stop(controller) == 0)
        Self.report("dripping-connections", ["connections": connections, "descriptors_over_baseline": left, "cli_status": Int(status.status)])
    }

    @Test func oversizedAndGarbageFramesOnBothSocketsAreAnsweredAndHarmless() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances(Array(Self.instances.prefix(1))))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        let controller = try await h.start()
        try await h.add("m1", provider: "cloud", instance: "i-1")
        try await h.waitForMachines("m1 to converge") { $0["m1"]?.addressValues == ["10.2.0.1"] }
        let shimSocket = try #require(h.runtimeEntries().first { $0.hasPrefix("cloud-") && $0.hasSuffix(".sock") })

        let sockets: [(path: String, probe: RequestEnvelope)] = [
            ("\(h.runtimeDirectory)/control.sock", RequestEnvelope(service: ControlV1.serviceName, method: "Status", payload: ByteBuffer())),
            ("\(h.runtimeDirectory)/\(shimSocket)", RequestEnvelope(service: ProviderV1.serviceName, method: "Health", payload: ByteBuffer())),
        ]
        var random = Self.generator("garbage frames")
        var answered = 0
        for (path, probe) in sockets {
            let connection = try await RawConnection(unixSocketPath: path)
            // Over 4 MiB: answered ResourceExhausted, the connection stays.
            var oversized = ByteBuffer()
            _ = oversized.writeFrameHeader(FrameHeader(dataLength: UInt32(FrameHeader.maxDataLength + 1), streamID: 1, type: .request))
            oversized.writeRepeatingByte(0xAB, count: FrameHeader.maxDataLength + 1)
            try await connection.write(oversized)
            let (tooBig, answer) = try await connection.nextResponse()
            #expect(tooBig == 1 && answer.error?.code == .resourceExhausted, "\(path): \(String(describing: answer.error))")

            // A request frame whose data is not a ttrpc Request.
            var garbage = ByteBuffer()
            let junk = (0..<512).map { _ in UInt8.random(in: 0...255, using: &random) }
            _ = garbage.writeFrameHeader(FrameHeader(dataLength: UInt32(junk.count), streamID: 3, type: .request))
            garbage.writeBytes(junk)
            try await connection.write(garbage)
            let (garbled, refused) = try await connection.nextResponse()
            #expect(garbled == 3 && refused.error?.code == .invalidArgument, "\(path): \(String(describing: refused.error))")

            // And the same connection still serves a real call.
            try await connection.sendRequest(probe, streamID: 5)
            let (served, ok) = try await connection.nextResponse()
            #expect(served == 5 && ok.error == nil, "\(path): \(String(describing: ok.error))")
            await connection.close()

            // A stream of random bytes: whatever the server makes of it, it
            // stays up for the next client.
            let noise = try await RawConnection(unixSocketPath: path)
            try await noise.write((0..<65_536).map { _ in UInt8.random(in: 0...255, using: &random) })
            await noise.close()
            let next = try await RawConnection(unixSocketPath: path)
            try await next.sendRequest(probe, streamID: 1)
            let (again, fine) = try await next.nextResponse()
            #expect(again == 1 && fine.error == nil, "\(path) serves after random bytes")
            await next.close()
            answered += [tooBig == 1, garbled == 3, served == 5, again == 1].count(where: { $0 })
        }

        try await h.add("m2", provider: "cloud", instance: "i-1")
        try await h.waitForMachines("polling goes on") { $0["m2"]?.addressValues == ["10.2.0.1"] }
        let shimDowns = controller.stderrLines.lines.count { $0.contains("shim down") }
        #expect(shimDowns == 0, "the shim survived the frames")
        #expect(controller.exitStatusIfExited == nil)
        #expect(try await h.stop(controller) == 0)
        #expect(h.processesOfThisTest().isEmpty)
        Self.report("bad-frames", ["sockets": sockets.count, "answered_as_expected": answered, "of": 4 * sockets.count, "shim_downs": shimDowns])
    }
}

/// The servers' limits against floods from a client of the same user.
extension FaultInjectionTests {
    /// The metrics port from `serving metrics address=http://127.0.0.1:PORT/metrics`.
    static func metricsPort(_ controller: ChildProcess) async throws -> Int {
        let serving = try await controller.stderrLines.waitForLine(containing: "serving metrics")
        let url = try #require(logValue("address", in: serving.line))
        return try #require(url.split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) })
    }

    @Test func aDescriptorFloodOnBothServersIsCappedAndTheControllerServesThroughAndAfterIt() async throws {
        let controlFlood = Self.count("FAULT_FLOOD_CONTROL", 300)
        let metricsFlood = Self.count("FAULT_FLOOD_METRICS", 400)
        // Soft and hard: the two floods together are larger.
        let descriptorLimit = Self.count("FAULT_FLOOD_FD_LIMIT", 512)
        let (controlCap, metricsCap) = (64, 16)
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances(Array(Self.instances.prefix(2))))
        try h.writeConfig(
            providers: [h.fakeProvider("cloud", scenario: scenario)],
            settings: ControllerHarness.fastSettings + """

                metrics:
                  address: 127.0.0.1:0
                limits:
                  control_connections: \(controlCap)
                  metrics_connections: \(metricsCap)
                  header_timeout: 120s
                """
        )
        #expect(controlFlood + metricsFlood > descriptorLimit, "the flood alone would take every descriptor")
        let controller = try await h.start(logLevel: "trace", limitingDescriptorsTo: descriptorLimit, hardLimit: true)
        let port = try await Self.metricsPort(controller)
        let shims = try await h.waitForShims(controller, count: 1)
        try await h.add("m1", provider: "cloud", instance: "i-1")
        try await h.waitForMachines("m1 to converge") { $0["m1"]?.addressValues == ["10.2.0.1"] }
        let baseline = ProcessTree.openDescriptors(of: controller.pid)

        // Half-open connections to the metrics port: all but the cap are closed at once.
        var metricsFDs: [Int32] = []
        var controlFDs: [Int32] = []
        defer { for fd in metricsFDs + controlFDs { close(fd) } }
        metricsFDs = try await SocketFiles.connectTCP(port: port, count: metricsFlood)
        let refusedMetrics = await SocketFiles.waitForPeerCloses(metricsFDs, count: metricsFlood - metricsCap)
        #expect(refusedMetrics.count == metricsFlood - metricsCap)
        #expect(try await h.cli(["status"]).status == 0, "the control socket is not affected")

        // Idle connections to the control socket: likewise.
        controlFDs = try await SocketFiles.connect("\(h.runtimeDirectory)/control.sock", count: controlFlood)
        let refusedControl = await SocketFiles.waitForPeerCloses(controlFDs, count: controlFlood - controlCap)
        #expect(refusedControl.count == controlFlood - controlCap)
        let held = ProcessTree.openDescriptors(of: controller.pid) - baseline
        #expect(held <= controlCap + metricsCap + 8, "the controller holds at most the caps: \(held) descriptors over the baseline")

        // A shim restart still gets its descriptors.
        let mark = controller.stderrLines.lines.count
        kill(shims[0], SIGKILL)
        let restarted = try await h.waitForShims(controller, count: 1, from: mark)
        #expect(restarted != shims)
        try await h.add("m2", provider: "cloud", instance: "i-2")
        try await h.waitForMachines("m2 to converge during the flood") { $0["m2"]?.addressValues == ["10.2.0.2"] }

        // The flood ends: the operator is served at once.
        let released = controller.stderrLines.lines.count
        for fd in controlFDs { close(fd) }
        controlFDs.removeAll()
        try await controller.stderrLines.waitForLine(from: released, "the control connections to close") {
            $0.contains("connection closed") && $0.contains("control.sock") && logValue("open", in: $0) == "0"
        }
        let status = try await h.cli(["status"])
        #expect(status.status == 0, "status after the flood: \(status.stderr)")
        for fd in metricsFDs { close(fd) }
        metricsFDs.removeAll()
        try await controller.stderrLines.waitForLine(from: released, "the metrics connections to close") {
            $0.contains("metrics connection closed") && logValue("open", in: $0) == "0"
        }
        let metrics = try await HTTP.get(port: port, path: "/metrics")
        #expect(metrics.hasPrefix("HTTP/1.1 200 OK"))
        func value(_ series: String) -> Int? {
            metrics.split(separator: "\n").first { $0.hasPrefix(series + " ") }
                .flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }.map { Int($0) }
        }
        let controlRefusals = value("instancepoller_server_limit_hits_total{server=\"control\",limit=\"connections\"}") ?? 0
        let metricsRefusals = value("instancepoller_server_limit_hits_total{server=\"metrics\",limit=\"connections\"}") ?? 0
        #expect(controlRefusals == controlFlood - controlCap)
        #expect(metricsRefusals == metricsFlood - metricsCap)
        #expect(value("instancepoller_server_connections{server=\"control\"}") == 0)
        #expect(!controller.stderrLines.lines.contains { $0.contains("Too many open files") })
        let warnings = controller.stderrLines.lines.filter { $0.contains("refused connection:") && $0.contains("limit=connections") }
        #expect(!warnings.isEmpty && warnings.count < 50, "refusals are logged, rate-limited: \(warnings.count) lines")
        #expect(try await h.stop(controller) == 0)
        Self.report("connection-flood", [
            "control_flood": controlFlood, "metrics_flood": metricsFlood, "descriptor_limit": descriptorLimit, "descriptors_held": held,
            "control_refused": controlRefusals, "metrics_refused": metricsRefusals,
        ])
    }

    @Test func manyEventsLongPollsShareOneStoreWatcher() async throws {
        let callers = Self.count("FAULT_EVENTS_POLLS", 200)
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances(Array(Self.instances.prefix(1))))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        let controller = try await h.start(logLevel: "info")
        _ = try await h.waitForShims(controller, count: 1)
        let quiet = Logger(label: "events-client") { _ in SwiftLogNoOpLogHandler() }
        var clients: [RPCClient] = []
        for _ in 0..<8 {
            clients.append(try await RPCClient.connect(unixSocketPath: "\(h.runtimeDirectory)/control.sock", logger: quiet))
        }
        let connections = clients

        /// `count` concurrent Events calls waiting `wait` past the log's end;
        /// the controller's CPU time over them, and their answers.
        func longPolls(_ count: Int, wait: Duration, during: @Sendable () async throws -> Void = {}) async throws
            -> (cpu: Duration, elapsed: Duration, answers: [Instancepoller_Control_V1_EventsResponse])
        {
            let after = try await h.store.latestRevision()
            let before = try #require(ProcessTree.cpuTime(of: controller.pid))
            let start = ContinuousClock.now
            let answers = try await withThrowingTaskGroup(of: Instancepoller_Control_V1_EventsResponse.self) { group in
                for index in 0..<count {
                    group.addTask {
                        try await connections[index % connections.count].call(
                            ControlV1.events, .with { $0.afterRevision = after; $0.waitNano = wait.totalNanoseconds }, timeout: wait + .seconds(30)
                        )
                    }
                }
                try await during()
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let elapsed = ContinuousClock.now - start
            let cpu = try #require(ProcessTree.cpuTime(of: controller.pid)) - before
            return (cpu, elapsed, answers)
        }

        // The same calls waiting 2 s and 6 s: the difference is what 4 s of
        // waiting costs (taking and answering the calls costs the same).
        // One watcher reads the log 10 times a second whoever waits; a
        // watcher per call would read it 8 000 times a second.
        let short = try await longPolls(callers, wait: .seconds(2))
        let long = try await longPolls(callers, wait: .seconds(6))
        #expect(short.answers.count == callers && long.answers.count == callers)
        #expect((short.answers + long.answers).allSatisfy { $0.events.isEmpty })
        let waiting = long.cpu - short.cpu
        #expect(
            waiting < .milliseconds(400),
            "4 s more of \(callers) waiting calls cost \(waiting) of CPU (\(short.cpu) over \(short.elapsed), \(long.cpu) over \(long.elapsed))"
        )
        // A change wakes every waiting call at once, long before its wait ends.
        let woken = try await longPolls(callers, wait: .seconds(30)) {
            try await h.add("m1", provider: "cloud", instance: "i-1")
        }
        #expect(woken.answers.allSatisfy { $0.events.contains { $0.machineID == "m1" } })
        #expect(woken.elapsed < .seconds(10), "woken by the change, not by the wait's end: \(woken.elapsed)")
        for client in clients { await client.close() }
        #expect(try await h.stop(controller) == 0)
        Self.report("events-long-polls", [
            "callers": callers, "cpu_ms_2s": Int(short.cpu / .milliseconds(1)), "cpu_ms_6s": Int(long.cpu / .milliseconds(1)),
            "woken_ms": Int(woken.elapsed / .milliseconds(1)),
        ])
    }

    @Test func connectionsEachSendingMostOfA4MiBFrameStayWithinTheRequestMemoryBudget() async throws {
        let connections = Self.count("FAULT_PARTIAL_FRAMES", 200)
        let budget = 64 << 20
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances(Array(Self.instances.prefix(1))))
        // Every connection is admitted: the memory budget alone bounds them.
        try h.writeConfig(
            providers: [h.fakeProvider("cloud", scenario: scenario)],
            settings: ControllerHarness.fastSettings + "\nlimits: {control_connections: \(connections + 100), frame_timeout: 120s, request_memory: 64MiB}"
        )
        let controller = try await h.start(logLevel: "info")
        _ = try await h.waitForShims(controller, count: 1)
        let before = try #require(ProcessTree.residentBytes(of: controller.pid))

        // Each announces 4 MiB - 1 bytes of request and sends all but the last byte.
        var head = ByteBuffer()
        head.writeFrameHeader(FrameHeader(dataLength: UInt32(FrameHeader.maxDataLength - 1), streamID: 1, type: .request))
        let frame = Array(head.readableBytesView) + [UInt8](repeating: 0x0A, count: FrameHeader.maxDataLength - 2)
        let fds = try await SocketFiles.connect("\(h.runtimeDirectory)/control.sock", count: connections)
        defer { for fd in fds { close(fd) } }
        await onOwnThread { [fds, frame] in
            var timeout = timeval(tv_sec: 20, tv_usec: 0)
            for fd in fds {
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                // Blocks while the controller reads; fails once it closes the connection.
                _ = frame.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
        }
        let closed = await SocketFiles.waitForPeerCloses(fds, count: connections - budget / FrameHeader.maxDataLength)
        let after = try #require(ProcessTree.residentBytes(of: controller.pid))
        let peak = try #require(ProcessTree.residentBytes(of: controller.pid, peak: true))
        #expect(closed.count >= connections - budget / FrameHeader.maxDataLength, "connections past the budget are closed")
        #expect(peak - before < budget + (128 << 20), "peak RSS \(peak >> 20) MiB from \(before >> 20) MiB")
        // The operator is still served.
        let status = try await h.cli(["status"])
        #expect(status.status == 0, "\(status.stderr)")
        #expect(try await h.stop(controller) == 0)
        Self.report("partial-frame-flood", [
            "connections": connections, "closed_over_budget": closed.count,
            "rss_before_mib": before >> 20, "rss_after_mib": after >> 20, "rss_peak_mib": peak >> 20,
        ])
        print("partial-frame flood: \(connections) connections, \(closed.count) closed over budget, RSS \(before >> 20) MiB before, \(after >> 20) MiB after, peak \(peak >> 20) MiB")
    }
}
