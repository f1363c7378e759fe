import Controller
import Core
import Foundation
import ProviderShim
import SwiftProtobuf
import Testing
import TestSupport

/// Supervision of real shim processes (SPEC §6.4); time between checks and
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
            // While it is down, calls fail at once.
            await #expect(throws: RPCError.self) {
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
