import Controller
import Foundation
import NIOConcurrencyHelpers
import Testing
import TestSupport

/// The controller as a production daemon (docs/DESIGN.md §6.6), with
/// the real binaries: the notify protocol as systemd would read it, the
/// defaults systemd's `RuntimeDirectory=` and `StateDirectory=` give it, the
/// unit file in dist/systemd, and the health endpoints on the metrics
/// listener.
@Suite("Production daemon: systemd and health endpoints")
struct DaemonTests {
    /// A datagram socket bound in a test's directory, as systemd's
    /// `$NOTIFY_SOCKET`: every datagram, in order, waited for with a bound.
    final class NotifySocket: Sendable {
        let path: String
        private let fd: Int32
        private let received = NIOLockedValueBox<[String]>([])

        init(path: String) throws {
            self.path = path
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            try #require(fd >= 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8) + [0]
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
            let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count)
            let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            try #require(bound == 0, "bind \(path): \(String(cString: strerror(errno)))")
        }

        deinit { close(fd) }

        /// Everything received so far.
        var all: [String] { received.withLockedValue { $0 } }

        /// The next datagram within `limit` (poll(2) on a thread of its own).
        func next(_ limit: Duration = .seconds(30)) async throws -> String {
            let fd = self.fd
            let received = self.received
            return try await withTimeout(limit + .seconds(1), "a datagram on the notify socket") {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<String, any Error>) in
                    Thread.detachNewThread {
                        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                        guard poll(&entry, 1, Int32(limit.components.seconds * 1000)) == 1 else {
                            continuation.resume(throwing: DaemonTests.NoDatagram(what: "no datagram on the notify socket within \(limit)"))
                            return
                        }
                        var buffer = [UInt8](repeating: 0, count: 4096)
                        let count = recv(fd, &buffer, buffer.count, 0)
                        guard count >= 0 else {
                            continuation.resume(throwing: DaemonTests.NoDatagram(what: "recv: \(String(cString: strerror(errno)))"))
                            return
                        }
                        let text = String(decoding: buffer[0..<count], as: UTF8.self)
                        received.withLockedValue { $0.append(text) }
                        continuation.resume(returning: text)
                    }
                }
            }
        }

        /// The next datagram that is not a watchdog ping or a status update.
        func nextEvent(_ limit: Duration = .seconds(30)) async throws -> String {
            for _ in 0..<500 {
                let text = try await next(limit)
                if text != "WATCHDOG=1", !text.hasPrefix("STATUS=") { return text }
            }
            throw DaemonTests.NoDatagram(what: "only WATCHDOG and STATUS in 500 datagrams")
        }

        /// Datagrams already queued (none waited for).
        func drain() -> [String] {
            var texts: [String] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            for _ in 0..<10_000 {
                let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                guard count >= 0 else { break }
                texts.append(String(decoding: buffer[0..<count], as: UTF8.self))
            }
            received.withLockedValue { $0 += texts }
            return texts
        }
    }

    struct NoDatagram: Error, CustomStringConvertible {
        var what: String
        var description: String { what }
    }

    /// A config with neither `store` nor `runtime_directory`: the unit's
    /// directories decide.
    static func unitStyleConfig(_ h: ControllerHarness, providers: [String], extra: String = "") -> String {
        """
        \(ControllerHarness.fastSettings)
        \(extra)
        providers:
        \(providers.joined(separator: "\n"))
        credentials:
          - provider: cloud
            name: main
            auth_type: token
            attributes: {token: letmein}

        """
    }

    @Test func notifySocketHearsReadyWatchdogReloadingAndStoppingInOrderAndTheUnitDirectoriesAreUsed() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("up", ControllerHarness.runningInstances([("c-1", "10.1.0.1")]))
        try Self.unitStyleConfig(h, providers: [h.fakeProvider("cloud", scenario: scenario)])
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        // As systemd makes them: private, the service user's.
        let runtime = h.directory.file("rt")
        let state = h.directory.file("state")
        for directory in [runtime, state] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        }
        let notify = try NotifySocket(path: h.directory.file("notify"))
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notify.path
        // 2 s: pinged every second; an idle poll loop turns every watch
        // interval (1 s with SQLite), so each ping finds a beat within 2 s.
        environment["WATCHDOG_USEC"] = "2000000"
        environment["WATCHDOG_PID"] = nil
        // Several paths: the first is the controller's.
        environment["RUNTIME_DIRECTORY"] = "\(runtime):\(h.directory.file("rt-other"))"
        environment["STATE_DIRECTORY"] = state
        let controller = try await h.start(environment: environment)

        // READY=1 first, with a one-line status.
        let ready = try await notify.next()
        let readyLines = ready.split(separator: "\n").map(String.init)
        #expect(readyLines.first == "READY=1")
        #expect(readyLines.count == 2 && readyLines[1].hasPrefix("STATUS=") && readyLines[1].contains("with 1 provider"), "\(ready)")
        #expect(try await h.waitForShims(controller, count: 1).count == 1, "READY came once the shim had started")

        // The unit's directories, not the user's defaults.
        #expect(FileManager.default.fileExists(atPath: "\(state)/instancepoller.db"))
        #expect(FileManager.default.fileExists(atPath: "\(runtime)/control.sock"))
        #expect(!FileManager.default.fileExists(atPath: h.directory.file("rt-other")))
        let started = try await controller.stderrLines.waitForLine(containing: "controller started")
        #expect(started.line.contains("\(state)/instancepoller.db"))

        // Pings every second while the poll loop turns.
        var pings = 0
        for _ in 0..<50 where pings < 3 {
            if try await notify.next() == "WATCHDOG=1" { pings += 1 }
        }
        #expect(pings == 3)

        // The CLI finds the socket the same way.
        let status = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), ["status"], environment: ["RUNTIME_DIRECTORY": runtime, "PATH": "/usr/bin:/bin"])
        status.closeStdin()
        let statusExit = try await status.waitForExit()
        let statusOutput = try await status.output()
        #expect(statusExit == 0, "\(statusOutput.stderr)")

        // SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1. What
        // queued while the CLI ran (pings, a status) is read first, as
        // systemd reads at once: a Unix datagram queue holds only
        // net.unix.max_dgram_qlen messages (10 by default).
        // The reload renames the log format (human is logfmt): nothing
        // that needs a restart.
        #expect(notify.drain().allSatisfy { $0 == "WATCHDOG=1" || $0.hasPrefix("STATUS=") })
        try Self.unitStyleConfig(h, providers: [h.fakeProvider("cloud", scenario: scenario)], extra: "log: {format: logfmt}")
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        let beforeReload = controller.stderrLines.lines.count
        kill(controller.pid, SIGHUP)
        let reloading = try await notify.nextEvent()
        #expect(reloading.hasPrefix("RELOADING=1\nMONOTONIC_USEC="), "\(reloading)")
        let reloaded = try await notify.nextEvent()
        #expect(reloaded.hasPrefix("READY=1\nSTATUS="), "\(reloaded)")
        _ = try await controller.stderrLines.waitForLine(containing: "config reloaded", from: beforeReload)
        let restartWarnings = controller.stderrLines.lines.dropFirst(beforeReload).filter { $0.contains("take effect at the next restart") }
        #expect(restartWarnings.isEmpty, "\(restartWarnings)")

        // SIGTERM: STOPPING=1, and no ping after it.
        controller.terminate()
        let stopping = try await notify.nextEvent()
        #expect(stopping == "STOPPING=1")
        #expect(try await controller.waitForExit() == 0)
        let after = notify.drain()
        #expect(!after.contains("WATCHDOG=1"), "pings after STOPPING=1: \(after)")
        #expect(!after.contains { $0.contains("READY=1") })
        #expect(!FileManager.default.fileExists(atPath: "\(runtime)/control.sock"), "the socket is removed at the stop")
    }

    @Test func healthzAndReadyzFollowTheShimDownAndBackWithDetailOnlyForTheTokenHolder() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("up", ControllerHarness.runningInstances([("c-1", "10.1.0.1")]))
        // The shim starts only while the file `go` exists; else it says why
        // on stderr and exits 3 (and is restarted with backoff).
        let go = h.directory.file("go")
        try Data().write(to: URL(fileURLWithPath: go))
        let shim = BuiltProducts.path(of: "provider-shim")
        let provider = """
              cloud:
                shim:
                  command: /bin/sh
                  args: ["-c", "if [ -e '\(go)' ]; then exec '\(shim)' fake --scenario '\(scenario)'; fi; echo 'cloud SDK: no region' >&2; exit 3"]
                cloud:
                  type: fake
            """
        let token = "health-token-\(UInt64.random(in: 0...UInt64.max))"
        try (token + "\n").write(toFile: h.directory.file("metrics-token"), atomically: true, encoding: .utf8)
        chmod(h.directory.file("metrics-token"), 0o600)
        try """
            store: store.db
            runtime_directory: run
            \(Self.unitStyleConfig(h, providers: [provider], extra: "metrics:\n  address: 127.0.0.1:0\n  bearer_token_file: metrics-token"))
            """.write(toFile: h.configPath, atomically: true, encoding: .utf8)
        let controller = try await h.start()
        let port = try await FaultInjectionTests.metricsPort(controller)
        let bearer = ["Authorization: Bearer \(token)"]

        // Alive, and ready once started with its shim up.
        let alive = try await HTTP.get(port: port, path: "/healthz")
        #expect(alive.hasPrefix("HTTP/1.1 200"))
        #expect(alive.hasSuffix("\r\n\r\nok\n"))
        try await controller.stderrLines.waitForLine(containing: "told the service manager: ready")
        let ready = try await HTTP.get(port: port, path: "/readyz")
        #expect(ready.hasPrefix("HTTP/1.1 200"), "\(ready)")
        #expect(ready.hasSuffix("\r\n\r\nok\n"))
        #expect(try await HTTP.get(port: port, path: "/metrics").hasPrefix("HTTP/1.1 401"), "metrics still need the token")

        // The shim dies and cannot start again: not ready, and why.
        let started = try await controller.stderrLines.waitForLine(containing: "shim started")
        let pid = try #require(logValue("pid", in: started.line).flatMap(Int32.init))
        try FileManager.default.removeItem(atPath: go)
        kill(pid, SIGKILL)
        let failed = try await controller.stderrLines.waitForLine(from: started.index, "a failed restart") {
            $0.contains("shim failed to start") && $0.contains("exited with status 3")
        }
        let anonymous = try await HTTP.get(port: port, path: "/readyz")
        #expect(anonymous.hasPrefix("HTTP/1.1 503"), "\(anonymous)")
        let anonymousLines = Self.body(anonymous).split(separator: "\n").map(String.init)
        #expect(anonymousLines.count == 1, "\(anonymousLines)")
        let line = try #require(anonymousLines.first)
        #expect(line == "provider cloud: shim down, starting again" || (line.hasPrefix("provider cloud: shim down, restarting in ") && line.hasSuffix("s")), "\(line)")
        #expect(!anonymous.contains("cloud SDK"), "no detail without the token")
        let detailed = try await HTTP.get(port: port, path: "/readyz", headers: bearer)
        #expect(detailed.hasPrefix("HTTP/1.1 503"))
        let detailedLine = try #require(Self.body(detailed).split(separator: "\n").first.map(String.init))
        #expect(detailedLine.hasPrefix("provider cloud: shim down (provider cloud: shim failed to start: "), "\(detailedLine)")
        #expect(detailedLine.contains("exited with status 3") && detailedLine.contains("cloud SDK: no region"))
        #expect(try await HTTP.get(port: port, path: "/healthz").hasPrefix("HTTP/1.1 200"), "still alive")

        // Back: ready again once the new shim answered a health check.
        try Data().write(to: URL(fileURLWithPath: go))
        try await controller.stderrLines.waitForLine(containing: "last problem cleared", from: failed.index)
        let again = try await HTTP.get(port: port, path: "/readyz")
        #expect(again.hasPrefix("HTTP/1.1 200"), "\(again)")
        #expect(try await h.stop(controller) == 0)
    }

    /// The body of an HTTP answer.
    static func body(_ response: String) -> String {
        response.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
    }
}
