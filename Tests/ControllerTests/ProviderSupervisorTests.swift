@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Foundation
import ProviderShim
import SwiftProtobuf
import Testing
import TestSupport
import FakeProvider

/// Supervision of real shim processes (docs/DESIGN.md §6.4); time between checks and
/// restarts runs on a manual clock.
@Suite("Provider supervisor")
struct ProviderSupervisorTests {
    static let credential = ProviderV1.Credential.with {
        $0.attributes = ["access-key": "AKIAFAKEEXAMPLE", "secret-key": "fake-secret-key"]
    }

    /// Reads the supervisor's events one by one, with a timeout each.
    final class Events: Sendable {
        let stream: AsyncStream<ProviderSupervisor.Event>
        init(_ stream: AsyncStream<ProviderSupervisor.Event>) { self.stream = stream }
        func next() async throws -> ProviderSupervisor.Event? {
            let stream = self.stream
            return try await withTimeout(.seconds(20), "a supervisor event") {
                var iterator = stream.makeAsyncIterator()
                return await iterator.next()
            }
        }
    }

    static func with(
        command: ShimCommand = ShimLauncherTests.fake,
        settings: SupervisionSettings = SupervisionSettings(),
        _ body: (ProviderSupervisor, Events, ManualPollClock) async throws -> Void
    ) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = ManualPollClock()
        let supervisor = ProviderSupervisor(
            provider: "fake", command: command, runtimeDirectory: directory.path, clock: clock, settings: settings,
            logger: LogCapture().logger()
        )
        let events = Events(supervisor.events)
        let running = Task { await supervisor.run() }
        do {
            try await body(supervisor, events, clock)
        } catch {
            running.cancel()
            await running.value
            throw error
        }
        running.cancel()
        await running.value
    }

    @Test func aKilledShimIsRestartedAfterTheBackoffAndServesAgain() async throws {
        try await Self.with { supervisor, events, clock in
            guard case .started(let first)? = try await events.next() else { Issue.record("no start"); return }
            #expect(try await supervisor.access.instances(["i-db-1"], cloud: .init(), credential: Self.credential)[0].found)
            kill(first, SIGKILL)
            #expect(try await events.next() == .down(reason: "exited with status 137"))
            // While it is down, calls fail at once, saying the shim is down.
            await #expect(throws: ShimUnavailable(provider: "fake", reason: "no shim is running (it is being restarted)")) {
                _ = try await supervisor.access.instances(["i-db-1"], cloud: .init(), credential: Self.credential)
            }
            #expect(try await events.next() == .restarting(after: .seconds(1)))
            await clock.waitForSleepers()
            clock.advance(by: .seconds(1))
            guard case .started(let second)? = try await events.next() else { Issue.record("no restart"); return }
            #expect(second != first)
            #expect(try await supervisor.access.instances(["i-db-1"], cloud: .init(), credential: Self.credential)[0].found)
            #expect(await supervisor.restarts == 1)
        }
    }

    @Test func aShimThatCrashesAtStartBacksOffDoublingToThirtySeconds() async throws {
        let crashing = ShimCommand(executable: "/bin/sh", arguments: ["-c", "echo no cloud SDK today >&2; exit 1"])
        try await Self.with(command: crashing) { supervisor, events, clock in
            var backoffs: [Duration] = []
            while backoffs.count < 7 {
                switch try await events.next() {
                case .failedToStart(let reason)?:
                    #expect(reason.contains("no cloud SDK today"))
                case .restarting(let after)?:
                    backoffs.append(after)
                    await clock.waitForSleepers()
                    clock.advance(by: after)
                default:
                    Issue.record("unexpected event")
                    return
                }
            }
            #expect(backoffs == [1, 2, 4, 8, 16, 30, 30].map { Duration.seconds($0) })
            #expect(await supervisor.lastProblem?.contains("exited with status 1 before its handshake line") == true)
        }
    }

    @Test func threeFailedHealthChecksRestartTheShim() async throws {
        var settings = SupervisionSettings()
        settings.healthTimeout = .milliseconds(200)
        try await Self.with(settings: settings) { supervisor, events, clock in
            guard case .started(let pid)? = try await events.next() else { Issue.record("no start"); return }
            _ = pid
            // Make Health fail inside the shim.
            let control = try await Self.controlClient(for: supervisor)
            _ = try await control.call(FakeCloudControl.injectFault, .with { $0.fault = .with { $0.kind = .unavailable; $0.methods = ["Health"] } })
            for _ in 0..<3 {
                await clock.waitForSleepers()
                clock.advance(by: .seconds(5))
            }
            #expect(try await events.next() == .down(reason: "failed 3 health checks in a row"))
            #expect(try await events.next() == .restarting(after: .seconds(1)))
        }
    }

    @Test func aLiveSwapLosesNoCallAndSwitchesTheBackend() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let scenario = directory.file("second.yaml")
        try "instances:\n  - id: i-swapped\n    timeline:\n      - at: 0s\n        state: running\n".write(toFile: scenario, atomically: true, encoding: .utf8)
        let second = ShimCommand(executable: ShimLauncherTests.fake.executable, arguments: ["fake", "--scenario", scenario])
        try await Self.with { supervisor, events, _ in
            guard case .started(let oldPID)? = try await events.next() else { Issue.record("no start"); return }
            // Callers keep calling through the swap.
            let calls = Task {
                var failures: [String] = []
                var made = 0
                while !Task.isCancelled {
                    do {
                        _ = try await supervisor.access.instances(["i-db-1", "i-swapped"], cloud: .init(), credential: Self.credential)
                    } catch let error as RPCError where error.code == .cancelled {
                        break  // the test stopped the callers
                    } catch {
                        failures.append("\(error)")
                    }
                    made += 1
                }
                return (made, failures)
            }
            try await supervisor.swap(to: second) { client in
                _ = try await client.validateCredential(cloud: .init(), credential: Self.credential, timeout: .seconds(5))
            }
            guard case .swapped(let newPID)? = try await events.next() else { Issue.record("no swap"); return }
            #expect(newPID != oldPID)
            let found = try await supervisor.access.instances(["i-db-1", "i-swapped"], cloud: .init(), credential: Self.credential)
            #expect(found.map(\.found) == [false, true], "answers come from the new scenario")
            calls.cancel()
            let (made, failures) = await calls.value
            #expect(made > 0 && failures.isEmpty, "\(failures.count) of \(made) calls failed during the swap: \(failures.prefix(3))")
            #expect(await ProcessWatch.waitForExit(pid: oldPID, limit: .seconds(5)))
            #expect(await supervisor.pid == newPID)
            #expect(await supervisor.restarts == 0)
        }
    }

    @Test func aFailedSwapLeavesTheOldShimServing() async throws {
        try await Self.with { supervisor, events, _ in
            guard case .started(let pid)? = try await events.next() else { Issue.record("no start"); return }
            let broken = ShimCommand(executable: "/bin/sh", arguments: ["-c", "echo missing SDK >&2; exit 4"])
            await #expect {
                try await supervisor.swap(to: broken)
            } throws: { error in
                "\(error)".contains("exited with status 4") && "\(error)".contains("missing SDK")
            }
            #expect(await supervisor.pid == pid)
            #expect(try await supervisor.access.instances(["i-db-1"], cloud: .init(), credential: Self.credential)[0].found)
        }
    }

    @Test func stoppingShutsTheShimDownAndRemovesItsSocket() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let supervisor = ProviderSupervisor(
            provider: "fake", command: ShimLauncherTests.fake, runtimeDirectory: directory.path, clock: ManualPollClock(),
            logger: LogCapture().logger()
        )
        let events = Events(supervisor.events)
        let running = Task { await supervisor.run() }
        guard case .started(let pid)? = try await events.next() else { Issue.record("no start"); return }
        running.cancel()
        await running.value
        #expect(try await events.next() == .stopped)
        #expect(await ProcessWatch.waitForExit(pid: pid, limit: .seconds(2)))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
    }

    /// A FakeCloud control connection to the supervisor's live shim.
    static func controlClient(for supervisor: ProviderSupervisor) async throws -> RPCClient {
        let pid = try #require(await supervisor.pid)
        let environ = try String(contentsOfFile: "/proc/\(pid)/environ", encoding: .utf8).split(separator: "\0")
        let path = try #require(environ.first { $0.hasPrefix("INSTANCEPOLLER_SOCKET=") }?.dropFirst("INSTANCEPOLLER_SOCKET=".count))
        return try await RPCClient.connect(unixSocketPath: String(path), logger: LogCapture().logger())
    }
}
