@_spi(Testing) @testable import Controller
import Core
import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing
import TestSupport

/// The notify protocol the controller speaks to systemd (docs/DESIGN.md
/// §6.4.6): the environment it reads, the datagrams it sends (to a socket
/// file and to the abstract namespace), and when — driven by a manual clock.
@Suite("systemd notify protocol")
struct SystemdNotifierTests {
    static let silent = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

    /// Keeps every datagram, in order, and lets a test wait for the next.
    final class Recorder: NotifyTransport {
        private let sent = NIOLockedValueBox<[(text: String, waiting: Duration)]>([])
        private let stream = AsyncStream.makeStream(of: String.self)

        func send(_ datagram: [UInt8], to address: SystemdNotifier.Address, waiting: Duration) throws(NotifyFailure) {
            let text = String(decoding: datagram, as: UTF8.self)
            sent.withLockedValue { $0.append((text, waiting)) }
            stream.continuation.yield(text)
        }

        var all: [String] { sent.withLockedValue { $0.map(\.text) } }
        /// How long each datagram was allowed to wait for room, in order.
        var waits: [Duration] { sent.withLockedValue { $0.map(\.waiting) } }

        /// The next datagram, in the order sent.
        func next() async throws -> String {
            let stream = self.stream.stream
            return try await withTimeout(.seconds(10), "a datagram") {
                for await text in stream { return text }
                throw CancellationError()
            }
        }
    }

    @Test func theEnvironmentSaysWhereAndWhetherTheWatchdogIsOurs() {
        #expect(SystemdNotifier.Address("/run/systemd/notify") == .path("/run/systemd/notify"))
        #expect(SystemdNotifier.Address("@/org/freedesktop/systemd1/notify/1") == .abstract("/org/freedesktop/systemd1/notify/1"))
        for unusable in ["", "@", "relative/notify", "vsock:2:1234", "/" + String(repeating: "x", count: 107)] {
            #expect(SystemdNotifier.Address(unusable) == nil, "\(unusable) is not an address")
        }

        let me: Int32 = 4242
        func watchdog(_ environment: [String: String]) -> Duration? {
            SystemdNotifier(environment: environment, pid: me, transport: Recorder(), logger: Self.silent).watchdogInterval
        }
        let socket = ["NOTIFY_SOCKET": "/run/systemd/notify"]
        #expect(watchdog(socket.merging(["WATCHDOG_USEC": "400000"]) { $1 }) == .milliseconds(400))
        #expect(watchdog(socket.merging(["WATCHDOG_USEC": "400000", "WATCHDOG_PID": "4242"]) { $1 }) == .milliseconds(400))
        #expect(watchdog(socket.merging(["WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"]) { $1 }) == nil, "meant for another process")
        #expect(watchdog(socket.merging(["WATCHDOG_USEC": "0"]) { $1 }) == nil)
        #expect(watchdog(socket.merging(["WATCHDOG_USEC": "soon"]) { $1 }) == nil)
        #expect(watchdog(socket) == nil)
        #expect(watchdog(["WATCHDOG_USEC": "400000"]) == nil, "no socket, no watchdog")
    }

    @Test func withoutNotifySocketNothingIsSentAndNothingFails() {
        let recorder = Recorder()
        let notifier = SystemdNotifier(environment: [:], pid: getpid(), transport: recorder, logger: Self.silent)
        #expect(!notifier.isEnabled)
        notifier.send([("READY", "1")])
        #expect(recorder.all.isEmpty)
    }

    @Test func fieldsGoOutAsOneDatagramOfLinesAndAStatusStaysOneLine() async throws {
        let recorder = Recorder()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/n"], pid: getpid(), transport: recorder, logger: Self.silent)
        notifier.send([("READY", "1"), ("STATUS", "polling 3 machines\nwith 1 provider\r\n(1 shim down)")])
        #expect(try await recorder.next() == "READY=1\nSTATUS=polling 3 machines with 1 provider (1 shim down)")
    }

    @Test func aPingNeverWaitsButAChangeOfStateWaitsForRoom() {
        let recorder = Recorder()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/run/n"], pid: getpid(), transport: recorder, logger: Self.silent)
        notifier.send([("WATCHDOG", "1")])
        notifier.send([("READY", "1"), ("STATUS", "ok")])
        notifier.send([("RELOADING", "1")])
        notifier.send([("STOPPING", "1")])
        #expect(recorder.waits == [.zero, SystemdNotifier.stateMessageWait, SystemdNotifier.stateMessageWait, SystemdNotifier.stateMessageWait])
    }

    /// A manager that has not read lately: its queue is full (a Unix
    /// datagram queue holds net.unix.max_dgram_qlen messages). A ping is
    /// dropped at once; READY waits until the manager reads one message,
    /// then goes in, after what was queued.
    @Test func aFullQueueDropsAPingButReadyWaitsForRoom() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("notify")
        let fd = try Self.bindDatagram(Array(path.utf8) + [0])
        defer { close(fd) }
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": path], pid: getpid(), transport: nil, logger: Self.silent)
        // Fill the queue: fillers that never wait, until one finds no room.
        var queued = 0
        var full = false
        while !full, queued < 100_000 {
            do {
                try DatagramTransport().send(Array("filler-\(queued)".utf8), to: .path(path), waiting: .zero)
                queued += 1
            } catch {
                full = true
            }
        }
        try #require(full && queued > 0, "the queue never filled (\(queued) queued)")
        notifier.send([("WATCHDOG", "1")])
        let ready = Task.detached { notifier.send([("READY", "1")]) }
        // The manager reads one message: room for READY.
        let first = try #require(try Self.receive(fd))
        #expect(first == "filler-0")
        await ready.value
        var rest: [String] = []
        while let next = try Self.receive(fd, within: .zero) { rest.append(next) }
        #expect(rest.last == "READY=1", "READY went in after what was queued: \(rest.suffix(3))")
        #expect(!rest.contains("WATCHDOG=1"), "a ping to a full queue is dropped")
    }

    /// Binds a datagram socket at `address` (a path, or an abstract name
    /// after a NUL); returns its descriptor.
    static func bindDatagram(_ bytes: [UInt8]) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else {
            let problem = String(cString: strerror(errno))
            close(fd)
            throw SocketFailure(description: "bind: \(problem)")
        }
        return fd
    }

    struct SocketFailure: Error, CustomStringConvertible { var description: String }

    /// The next datagram on `fd`, waiting up to `limit` (poll(2), no sleeping).
    static func receive(_ fd: Int32, within limit: Duration = .seconds(10)) throws -> String? {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&entry, 1, Int32(limit.components.seconds * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count >= 0 else { return nil }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }

    @Test func aDatagramReachesASocketFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("notify")
        let fd = try Self.bindDatagram(Array(path.utf8) + [0])
        defer { close(fd) }
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": path], logger: Self.silent)
        notifier.send([("READY", "1"), ("STATUS", "polling")])
        #expect(try Self.receive(fd) == "READY=1\nSTATUS=polling")
    }

    @Test func aDatagramReachesTheAbstractNamespace() throws {
        let name = "ip-test-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = try Self.bindDatagram([0] + Array(name.utf8))
        defer { close(fd) }
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": "@\(name)"], logger: Self.silent)
        #expect(notifier.address == .abstract(name))
        notifier.send([("STOPPING", "1")])
        #expect(try Self.receive(fd) == "STOPPING=1")
    }

    @Test func aSocketNobodyListensOnIsLoggedOnceAtDebugAndNeverThrows() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let capture = LogCapture()
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": directory.file("gone")], logger: capture.logger())
        notifier.send([("READY", "1")])
        notifier.send([("WATCHDOG", "1")])
        let said = capture.all.filter { $0.message.contains("cannot notify the service manager") }
        #expect(said.count == 1)
        #expect(said.first?.level == .debug)
        #expect(said.first?.metadata["notify_socket"] == directory.file("gone"))
    }

    @Test func notifyAndWatchdogVariablesAreNeverPassedToAShim() {
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            #expect(!ShimCommand.isPassable(name))
        }
        let environment = ["NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1", "AWS_REGION": "eu-west-1"]
        #expect(ShimCommand.allowlisted(["NOTIFY_SOCKET", "WATCHDOG_USEC", "AWS_REGION"], from: environment) == ["AWS_REGION": "eu-west-1"])
    }

    // MARK: - When: the notifications on a manual clock

    /// A controller's health with shims the test sets, on `clock`.
    struct World {
        let clock = ManualPollClock()
        let recorder = Recorder()
        let heartbeat = PollHeartbeat()
        let shims = NIOLockedValueBox<[ControllerHealth.ShimState]?>(nil)
        let notifications: ServiceNotifications

        init(watchdog: Duration? = .milliseconds(400)) {
            var environment = ["NOTIFY_SOCKET": "/run/n"]
            if let watchdog { environment["WATCHDOG_USEC"] = "\(watchdog.components.seconds * 1_000_000 + watchdog.components.attoseconds / 1_000_000_000_000)" }
            let notifier = SystemdNotifier(environment: environment, pid: getpid(), transport: recorder, logger: SystemdNotifierTests.silent)
            let shims = self.shims
            let health = ControllerHealth(
                storeCheck: {}, shims: { shims.withLockedValue { $0 } }, heartbeat: heartbeat, clock: clock, pollStallLimit: .seconds(60))
            notifications = ServiceNotifications(
                notifier: notifier, health: health, clock: clock, after: nil, logger: SystemdNotifierTests.silent, statusInterval: .seconds(5))
        }

        func shim(_ provider: String, _ state: ProviderSupervisor.Snapshot.State) -> ControllerHealth.ShimState {
            ControllerHealth.ShimState(provider: provider, state: state)
        }

        /// Moves time by `step` and waits until the notifications park again.
        func advance(_ step: Duration) async {
            clock.advance(by: step)
            await clock.waitForSleepers(1)
        }
    }

    @Test func readyOnlyOnceEveryShimHasStartedOrBacksOffThenWatchdogWhileTheLoopBeats() async throws {
        let w = World()
        w.heartbeat.started(at: w.clock.now)
        let serving = Task { await w.notifications.serve() }
        defer { serving.cancel() }

        // The fleet has not launched: no READY.
        await w.clock.waitForSleepers(1)
        w.shims.withLockedValue { $0 = [w.shim("aws", .starting), w.shim("gcp", .starting)] }
        await w.advance(.milliseconds(100))
        #expect(w.recorder.all.isEmpty, "still starting")
        #expect(w.notifications.health.currentPhase == .starting)

        // One serves, the other failed and backs off: settled.
        w.shims.withLockedValue { $0 = [w.shim("aws", .running), w.shim("gcp", .restarting)] }
        w.heartbeat.turned(at: w.clock.now, machines: 1200)
        await w.advance(.milliseconds(100))
        #expect(try await w.recorder.next() == "READY=1\nSTATUS=polling 1200 machines with 2 providers (1 shim down)")
        #expect(w.notifications.health.currentPhase == .serving)

        // Every half interval (200 ms) while the loop beat within 400 ms.
        await w.advance(.milliseconds(200))
        #expect(try await w.recorder.next() == "WATCHDOG=1")
        w.heartbeat.turned(at: w.clock.now, machines: 1200)
        await w.advance(.milliseconds(200))
        #expect(try await w.recorder.next() == "WATCHDOG=1")

        // The loop stops beating: 400 ms after its last beat still pings
        // (not older than the interval); from 600 ms on, no ping.
        await w.advance(.milliseconds(200))
        #expect(try await w.recorder.next() == "WATCHDOG=1")
        let before = w.recorder.all.count
        await w.advance(.milliseconds(200))
        await w.advance(.milliseconds(200))
        await w.advance(.milliseconds(200))
        #expect(w.recorder.all.count == before, "a wedged loop gets no ping: \(w.recorder.all.suffix(3))")

        // It beats again: pings resume.
        w.heartbeat.progressed(at: w.clock.now)
        await w.advance(.milliseconds(200))
        #expect(try await w.recorder.next() == "WATCHDOG=1")

        // Stopping: said once, and nothing after it.
        w.notifications.stopping()
        w.notifications.stopping()
        #expect(try await w.recorder.next() == "STOPPING=1")
        w.heartbeat.progressed(at: w.clock.now)
        let stopped = w.recorder.all.count
        await w.advance(.milliseconds(200))
        await w.advance(.seconds(5))
        #expect(w.recorder.all.count == stopped)
        #expect(w.notifications.health.currentPhase == .stopping)
    }

    @Test func aReloadIsBracketedByReloadingAndReadyButNotBeforeTheFirstReady() async throws {
        let w = World(watchdog: nil)
        w.notifications.reloading()
        await w.notifications.reloaded()
        #expect(w.recorder.all.isEmpty, "a reload during the start says nothing: READY comes when the start is done")

        w.shims.withLockedValue { $0 = [w.shim("aws", .running)] }
        await w.notifications.ready()
        #expect(try await w.recorder.next() == "READY=1\nSTATUS=loading machines for 1 provider")
        w.notifications.reloading()
        let reloading = try await w.recorder.next()
        let lines = reloading.split(separator: "\n").map(String.init)
        #expect(lines.first == "RELOADING=1")
        #expect(lines.count == 2 && lines[1].hasPrefix("MONOTONIC_USEC=") && UInt64(lines[1].dropFirst("MONOTONIC_USEC=".count)) != nil)
        w.heartbeat.turned(at: w.clock.now, machines: 1)
        await w.notifications.reloaded()
        #expect(try await w.recorder.next() == "READY=1\nSTATUS=polling 1 machine with 1 provider")
    }

    @Test func statusIsSentWhenTheSummaryChangesAtMostEveryStatusInterval() async throws {
        let w = World(watchdog: nil)
        w.shims.withLockedValue { $0 = [w.shim("aws", .running), w.shim("gcp", .running)] }
        w.heartbeat.started(at: w.clock.now)
        w.heartbeat.turned(at: w.clock.now, machines: 10)
        let serving = Task { await w.notifications.serve() }
        defer { serving.cancel() }
        #expect(try await w.recorder.next() == "READY=1\nSTATUS=polling 10 machines with 2 providers")
        await w.clock.waitForSleepers(1)

        // Nothing changed: nothing said.
        w.heartbeat.turned(at: w.clock.now, machines: 10)
        await w.advance(.seconds(5))
        #expect(w.recorder.all.count == 1)

        // A shim goes down within the interval: said at the next look.
        w.shims.withLockedValue { $0 = [w.shim("aws", .running), w.shim("gcp", .restarting)] }
        w.heartbeat.turned(at: w.clock.now, machines: 12)
        await w.advance(.seconds(4))
        #expect(w.recorder.all.count == 1, "not before the interval")
        await w.advance(.seconds(1))
        #expect(try await w.recorder.next() == "STATUS=polling 12 machines with 2 providers (1 shim down)")
    }

    @Test func readinessNamesEachProblemOnOneLine() async {
        let clock = ManualPollClock()
        let heartbeat = PollHeartbeat()
        struct Down: Error, CustomStringConvertible { var description: String { "database is down\nretrying" } }
        let states = [
            ControllerHealth.ShimState(provider: "aws", state: .restarting, lastProblem: "exited with status 3", nextStart: clock.now + .seconds(47)),
            ControllerHealth.ShimState(provider: "gcp", state: .running),
            ControllerHealth.ShimState(provider: "vsphere", state: .starting),
        ]
        let health = ControllerHealth(
            storeCheck: { throw Down() }, shims: { states }, heartbeat: heartbeat, clock: clock, pollStallLimit: .seconds(30))
        health.set(.serving)
        heartbeat.started(at: clock.now)
        clock.advance(by: .seconds(45))  // the next start is 2 s away now
        let problems = await health.problems()
        #expect(problems.map { $0.line(detailed: true) } == [
            "store: unavailable (database is down retrying)",
            "poll loop: no turn for 45s",
            "provider aws: shim down (exited with status 3), restarting in 2s",
            "provider vsphere: shim starting",
        ])
        #expect(problems.map { $0.line(detailed: false) }[2] == "provider aws: shim down, restarting in 2s", "without the detail for a caller without the token")
        let answer = HealthAnswer.readiness(problems, detailed: false)
        #expect(!answer.ready)
        #expect(answer.body.split(separator: "\n").count == 4)
        #expect(HealthAnswer.readiness([], detailed: false) == (true, "ok\n"))
        #expect(ControllerHealth.pollStallLimit(watchInterval: .seconds(1), callTimeouts: [.seconds(30), .seconds(10)]) == .seconds(61))
        #expect(ControllerHealth.text(.milliseconds(400)) == "0.4s")
        #expect(ControllerHealth.text(.seconds(200)) == "200s")
        #expect(ControllerHealth.text(.seconds(700)) == "11m40s")
    }
}
