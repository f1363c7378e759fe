@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Foundation
import SwiftProtobuf
import Testing
import TestSupport

/// What `providers list` and `status` show of a shim (issue 17, item 6),
/// from the supervisor's snapshot and as the control API sends it: a
/// crash loop is `restarting` with its next start, a problem has its time
/// and is cleared once a later shim answers a health check serving, and a
/// refused swap is remembered with its time.
@Suite("Provider status")
struct ProviderStatusTests {
    static let config = ProviderConfig(name: "fake", shim: ShimLauncherTests.fake, cloud: .with { $0.type = "fake" })

    @Test func aCrashLoopingShimIsRestartingWithItsNextStartAndItsProblemsTime() async throws {
        let crashing = ShimCommand(executable: "/bin/sh", arguments: ["-c", "echo no cloud SDK today >&2; exit 1"])
        try await ProviderSupervisorTests.with(command: crashing) { supervisor, events, clock in
            guard case .failedToStart? = try await events.next() else { Issue.record("no failed start"); return }
            #expect(try await events.next() == .restarting(after: .seconds(1)))
            let failedAt = clock.now
            var snapshot = await supervisor.snapshot
            #expect(snapshot.state == .restarting)
            #expect(snapshot.restarts == 1)
            #expect(snapshot.nextStart == failedAt + .seconds(1))
            #expect(snapshot.lastProblem?.contains("no cloud SDK today") == true)
            #expect(snapshot.lastProblemAt == failedAt)
            var info = ControlService.wire(Self.config, snapshot)
            #expect(info.state == "restarting")
            #expect(info.nextStartUnixNano == (failedAt + .seconds(1)).nanosecondsSinceEpoch)
            #expect(info.lastProblemUnixNano == failedAt.nanosecondsSinceEpoch)
            #expect(info.restarts == 1)

            // The next failure, 1 s later: the backoff doubles, the times move.
            await clock.waitForSleepers()
            clock.advance(by: .seconds(1))
            guard case .failedToStart? = try await events.next() else { Issue.record("no second failed start"); return }
            #expect(try await events.next() == .restarting(after: .seconds(2)))
            snapshot = await supervisor.snapshot
            #expect(snapshot.restarts == 2)
            #expect(snapshot.nextStart == failedAt + .seconds(3))
            #expect(snapshot.lastProblemAt == failedAt + .seconds(1))
            info = ControlService.wire(Self.config, snapshot)
            #expect(info.state == "restarting")
        }
    }

    @Test func theLastProblemIsClearedOnceARestartedShimAnswersAHealthCheck() async throws {
        try await ProviderSupervisorTests.with { supervisor, events, clock in
            guard case .started(let first)? = try await events.next() else { Issue.record("no start"); return }
            #expect(await supervisor.snapshot.state == .running)
            kill(first, SIGKILL)
            #expect(try await events.next() == .down(reason: "exited with status 137"))
            let downAt = clock.now
            #expect(try await events.next() == .restarting(after: .seconds(1)))
            await clock.waitForSleepers()
            clock.advance(by: .seconds(1))
            guard case .started(let second)? = try await events.next() else { Issue.record("no restart"); return }
            // Started, but not yet checked: the problem still shows.
            var snapshot = await supervisor.snapshot
            #expect(snapshot.state == .running)
            #expect(snapshot.nextStart == nil)
            #expect(snapshot.lastProblem == "exited with status 137")
            #expect(snapshot.lastProblemAt == downAt)
            // Its first health check (5 s on) answers serving.
            await clock.waitForSleepers()
            clock.advance(by: .seconds(5))
            #expect(try await events.next() == .problemCleared(pid: second))
            snapshot = await supervisor.snapshot
            #expect(snapshot.lastProblem == nil)
            #expect(snapshot.lastProblemAt == nil)
            #expect(snapshot.restarts == 1, "the restart count stays")
            let info = ControlService.wire(Self.config, snapshot)
            #expect(info.lastProblem.isEmpty && info.lastProblemUnixNano == 0)
        }
    }

    @Test func aRefusedSwapIsRecordedWithItsTime() async throws {
        try await ProviderSupervisorTests.with { supervisor, events, clock in
            guard case .started(let pid)? = try await events.next() else { Issue.record("no start"); return }
            #expect(await supervisor.snapshot.lastRefusedSwap == nil)
            let broken = ShimCommand(executable: "/bin/sh", arguments: ["-c", "echo missing SDK >&2; exit 4"])
            await #expect(throws: ShimStartError.self) { try await supervisor.swap(to: broken) }
            let snapshot = await supervisor.snapshot
            #expect(snapshot.pid == pid, "the old shim keeps serving")
            #expect(snapshot.lastRefusedSwap?.contains("exited with status 4") == true)
            #expect(snapshot.lastRefusedSwap?.contains("missing SDK") == true)
            #expect(snapshot.lastRefusedSwapAt == clock.now)
            #expect(snapshot.lastProblem == nil, "a refused swap is not a problem of the serving shim")
            let info = ControlService.wire(Self.config, snapshot)
            #expect(info.lastRefusedSwap == snapshot.lastRefusedSwap)
            #expect(info.lastRefusedSwapUnixNano == clock.now.nanosecondsSinceEpoch)

            // A swap refused by its check is recorded too.
            struct Nope: Error, CustomStringConvertible { var description: String { "credential main is not valid" } }
            await #expect(throws: ShimStartError.self) {
                try await supervisor.swap(to: ShimLauncherTests.fake) { _ in throw Nope() }
            }
            #expect(await supervisor.snapshot.lastRefusedSwap?.contains("the new shim failed its checks: credential main is not valid") == true)
        }
    }
}
