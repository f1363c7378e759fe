@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Foundation
import Testing
import TestSupport

/// Starting real shim processes under the contract (proto/PROTOCOL.md §5, `docs/DESIGN.md` §6.4).
@Suite("Shim launcher")
struct ShimLauncherTests {
    static let fake = ShimCommand(
        executable: BuiltProducts.path(of: "provider-shim"),
        arguments: ["fake", "--scenario", BuiltProducts.repositoryRoot + "/scripts/scenarios/example.yaml"]
    )

    @Test func startsTheFakeShimWithAScrubbedEnvironmentInItsOwnProcessGroup() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let logs = LogCapture()
        var command = Self.fake
        command.environment = ["FAKE_REGION": "local"]
        let shim = try await ShimLauncher.start(provider: "fake", command: command, socketPath: directory.file("fake.sock"), logger: logs.logger())
        #expect(shim.handshake.shimName == "fake")
        #expect(try await shim.client.health(timeout: .seconds(5)).status == .serving)
        // Only the allowlist and the socket variable.
        let environ = try String(contentsOfFile: "/proc/\(shim.process.pid)/environ", encoding: .utf8)
            .split(separator: "\0").map(String.init).sorted()
        #expect(environ == ["FAKE_REGION=local", "INSTANCEPOLLER_SOCKET=\(directory.file("fake.sock"))"])
        #expect(getpgid(shim.process.pid) == shim.process.pid)
        // Closing stdin ends it; its stderr went into our log, tagged.
        shim.process.closeStdin()
        #expect(await withTimeoutResult(.seconds(5)) { await shim.process.waitForExit() } == 0)
        #expect(logs.all.contains { $0.message.contains("serving") && $0.metadata["provider"] == "fake" })
    }

    @Test func aBadHandshakeLineIsAFailedStartWithTheStderrTail() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let command = ShimCommand(executable: "/bin/sh", arguments: ["-c", "echo oops from the shim >&2; echo hello; sleep 30"])
        await #expect {
            _ = try await ShimLauncher.start(provider: "odd", command: command, socketPath: directory.file("s.sock"), logger: LogCapture().logger())
        } throws: { error in
            let text = "\(error)"
            return text.contains("provider odd: shim failed to start: bad handshake line \"hello\"") && text.contains("oops from the shim")
        }
    }

    @Test func noLineWithinTheStartupTimeoutIsAFailedStartAndTheShimIsKilled() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let command = ShimCommand(executable: "/bin/sh", arguments: ["-c", "echo warming up >&2; exec sleep 30"])
        let start = ContinuousClock.now
        await #expect {
            _ = try await ShimLauncher.start(
                provider: "slow", command: command, socketPath: directory.file("s.sock"),
                startupTimeout: .milliseconds(300), logger: LogCapture().logger()
            )
        } throws: { error in
            "\(error)".contains("no handshake line within") && "\(error)".contains("warming up")
        }
        // Not the shim's 30 s: the start gave up (with room for a loaded machine).
        #expect(ContinuousClock.now - start < .seconds(15))
    }

    /// A controller stopping while a shim starts (SIGTERM in a crash loop)
    /// must not wait for a shim that is still running and will never exit
    /// by itself: the start ends at once and the shim is killed.
    @Test func aStartCancelledBeforeTheHandshakeLineEndsAtOnceAndKillsTheShim() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let logs = LogCapture()
        let command = ShimCommand(executable: "/bin/sh", arguments: ["-c", "echo warming up >&2; exec sleep 37.25"])
        let starting = Task {
            try await ShimLauncher.start(provider: "slow", command: command, socketPath: directory.file("s.sock"), logger: logs.logger())
        }
        // Spawned and talking (its stderr reaches our log), no handshake line yet.
        try await withTimeout(.seconds(10), "the shim to be spawned") { await logs.waitFor { $0.message == "warming up" } }
        starting.cancel()
        let ended = try await withTimeout(.seconds(10), "the cancelled start to end") { await starting.result }
        #expect(throws: (any Error).self) { try ended.get() }
        let children = ProcessTree.children(of: getpid()).filter { ProcessTree.commandLine(of: $0).contains("sleep 37.25") && ProcessTree.isAlive($0) }
        #expect(children.isEmpty, "the shim was killed")
    }

    @Test func aShimThatExitsAtStartSaysSo() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let command = ShimCommand(executable: "/bin/sh", arguments: ["-c", "echo cannot reach the cloud SDK >&2; exit 3"])
        await #expect {
            _ = try await ShimLauncher.start(provider: "crashy", command: command, socketPath: directory.file("s.sock"), logger: LogCapture().logger())
        } throws: { error in
            "\(error)".contains("exited with status 3 before its handshake line") && "\(error)".contains("cannot reach the cloud SDK")
        }
    }

    @Test func aMissingExecutableIsNamed() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        await #expect {
            _ = try await ShimLauncher.start(
                provider: "ghost", command: ShimCommand(executable: "/nonexistent/shim"), socketPath: directory.file("s.sock"),
                logger: LogCapture().logger()
            )
        } throws: { error in
            "\(error)".contains("cannot start /nonexistent/shim")
        }
    }
}

/// The value of `body`, or nil after `limit`.
func withTimeoutResult<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async -> T) async -> T? {
    try? await withTimeout(limit) { await body() }
}
