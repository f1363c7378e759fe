import Controller
import Support
import ControlAPI
import Core
import Foundation
import Testing
import TestSupport

/// Operating providers' shims (issue 17, items 4 and 6): the shipped
/// example config runs from any working directory, a swap runs the new
/// shim in the CLI's directory and polls the provider's machines at once,
/// and `providers list` tells a crash loop, its problem and a refused swap
/// apart, with their times, in bounded columns.
@Suite("Provider operations", .serialized)
struct ProviderOperationsTests {
    /// `instancepoller ARGS --runtime-dir DIR`, run in `cwd`.
    static func cli(_ arguments: [String], in cwd: String, runtimeDir: String) async throws -> (status: Int32, stdout: String, stderr: String) {
        var arguments = arguments
        arguments.insert(contentsOf: ["--runtime-dir", runtimeDir], at: arguments.firstIndex(of: "--") ?? arguments.endIndex)
        let child = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), arguments, workingDirectory: cwd)
        child.closeStdin()
        let status = try await child.waitForExit()
        let output = try await child.output()
        return (status, output.stdout, output.stderr)
    }

    /// The one provider of a `providers list --format json` answer.
    static func provider(_ json: String) throws -> [String: Any] {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let providers = try #require(object["providers"] as? [[String: Any]])
        return try #require(providers.first)
    }

    /// An int64 field of proto JSON (a string) or a uint32 (a number); 0 when left out.
    static func number(_ provider: [String: Any], _ key: String) -> Int64 {
        if let text = provider[key] as? String { return Int64(text) ?? -1 }
        return (provider[key] as? NSNumber)?.int64Value ?? 0
    }

    static func isRFC3339(_ text: Substring) -> Bool {
        text.wholeMatch(of: /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/) != nil
    }

    @Test func theExampleConfigCopiedElsewhereRunsFromAnotherDirectoryAndASwapRunsInTheCLIsDirectory() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        // The shipped config and its scenario, copied into a directory of their own.
        let conf = h.directory.file("conf")
        let elsewhere = h.directory.file("elsewhere")
        for directory in [conf, elsewhere] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        }
        for name in ["example.yaml", "scenario.yaml"] {
            try FileManager.default.copyItem(atPath: BuiltProducts.repositoryRoot + "/config/\(name)", toPath: "\(conf)/\(name)")
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: "\(conf)/\(name)")
        }
        let runtime = "\(conf)/run"
        // The controller runs from another directory than the config's.
        let controller = try await ChildProcess.spawn(
            BuiltProducts.path(of: "instancepoller"), ["run", "--config", "\(conf)/example.yaml", "--log-level", "debug"],
            workingDirectory: elsewhere
        )
        defer { if controller.exitStatusIfExited == nil { controller.kill() } }
        try await controller.stderrLines.waitForLine(containing: "controller started")
        try await controller.stderrLines.waitForLine(containing: "shim started")

        var result = try await Self.cli(
            ["machines", "add", "db-1", "--provider", "demo", "--credential", "main", "--instance-id", "i-db-1"], in: elsewhere, runtimeDir: runtime)
        #expect(result.status == 0, "\(result.stderr)")
        // The example's scenario has i-db-1 running at 10.0.1.20: it converges.
        try await controller.stderrLines.waitForLine("db-1's addresses from the example scenario", .seconds(30)) {
            $0.contains("machine has new addresses") && $0.contains("db-1") && $0.contains("10.0.1.20")
        }
        result = try await Self.cli(["machines", "show", "db-1", "--format", "json"], in: elsewhere, runtimeDir: runtime)
        #expect(result.stdout.contains("\"group\":\"long\""), "agentless with addresses: polled every 15 minutes from now on")

        // Swap from the CLI's own directory, with a relative scenario there.
        try ControllerHarness.runningInstances([("i-db-1", "10.5.0.20")])
            .write(toFile: "\(elsewhere)/other.yaml", atomically: true, encoding: .utf8)
        let from = controller.stderrLines.lines.count
        result = try await Self.cli(["providers", "swap", "demo", "--", "provider-shim", "fake", "--scenario", "other.yaml"], in: elsewhere, runtimeDir: runtime)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("provider demo swapped: shim pid "))
        // The long-group machine gets the new backend's address at once, not in 15 minutes.
        try await controller.stderrLines.waitForLine(from: from, "db-1's address from the new backend", .seconds(20)) {
            $0.contains("machine has new addresses") && $0.contains("db-1") && $0.contains("10.5.0.20")
        }
        result = try await Self.cli(["providers", "list", "--format", "json"], in: elsewhere, runtimeDir: runtime)
        let demo = try Self.provider(result.stdout)
        #expect(demo["args"] as? [String] == ["fake", "--scenario", "other.yaml"])
        #expect(demo["state"] as? String == "running")

        // A relative path that is not there is named in full, from the CLI's directory.
        result = try await Self.cli(["providers", "swap", "demo", "--", "provider-shim", "fake", "--scenario", "gone.yaml"], in: elsewhere, runtimeDir: runtime)
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot read scenario \(elsewhere)/gone.yaml: No such file or directory"), "\(result.stderr)")

        controller.terminate()
        #expect(try await controller.waitForExit(.seconds(30)) == 0)
    }

    @Test func aCrashLoopShowsRestartingWithItsNextStartAndProblemUntilTheShimServesAndARefusedSwapIsShown() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        // A scenario named relative to the config, not there yet: the shim
        // exits at once, and is started again 5 s later (time enough to look).
        let settings = ControllerHarness.fastSettings.replacingOccurrences(of: "initial_backoff: 100ms", with: "initial_backoff: 5s")
            .replacingOccurrences(of: "max_backoff: 400ms", with: "max_backoff: 5s")
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: "late.yaml")], settings: settings)
        let controller = try await h.start()
        try await controller.stderrLines.waitForLine(containing: "restarting shim")

        var result = try await h.cli(["providers", "list", "--format", "json"])
        #expect(result.status == 0)
        var cloud = try Self.provider(result.stdout)
        #expect(cloud["state"] as? String == "restarting")
        #expect(Self.number(cloud, "restarts") >= 1)
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        let nextStart = Self.number(cloud, "next_start_unix_nano")
        #expect(nextStart > now && nextStart < now + 6_000_000_000, "the next start, within the 5 s backoff")
        let problem = try #require(cloud["last_problem"] as? String)
        #expect(problem.contains("cannot read scenario \(h.directory.path)/late.yaml: No such file or directory"), "\(problem)")
        let problemAt = Self.number(cloud, "last_problem_unix_nano")
        #expect(problemAt > 0 && problemAt <= now)

        // The table: the state with its next start, bounded columns, times as RFC 3339.
        result = try await h.cli(["providers", "list"])
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let header = try #require(lines.first)
        let row = try #require(lines.first { $0.hasPrefix("cloud ") })
        let commandAt = try #require(header.range(of: "COMMAND")).lowerBound.utf16Offset(in: header)
        let problemColumn = try #require(header.range(of: "LAST PROBLEM")).lowerBound.utf16Offset(in: header)
        let characters = Array(row)
        let commandCell = String(characters[commandAt..<problemColumn]).trimmingCharacters(in: .whitespaces)
        let problemCell = String(characters[problemColumn...])
        #expect(commandCell.count == 40 && commandCell.hasSuffix("…"), "\(commandCell)")
        #expect(problemCell.count == 60 && problemCell.hasSuffix("…"), "\(problemCell)")
        #expect(Self.isRFC3339(problemCell.prefix(20)), "\(problemCell)")
        let state = try #require(row.firstMatch(of: /restarting, next start (\S+)/))
        #expect(Self.isRFC3339(state.1))
        result = try await h.cli(["status"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("restarting, next start "))

        // The scenario appears: the next start serves, and once it has
        // answered a health check the problem is cleared.
        let from = controller.stderrLines.lines.count
        _ = try h.scenario("late", ControllerHarness.runningInstances([("c-1", "10.1.0.1")]))
        try await controller.stderrLines.waitForLine(containing: "shim started", from: from)
        try await controller.stderrLines.waitForLine(containing: "last problem cleared", from: from)
        result = try await h.cli(["providers", "list", "--format", "json"])
        cloud = try Self.provider(result.stdout)
        #expect(cloud["state"] as? String == "running")
        #expect(cloud["last_problem"] == nil && cloud["last_problem_unix_nano"] == nil)
        #expect(cloud["next_start_unix_nano"] == nil)
        #expect(Self.number(cloud, "restarts") >= 1, "the count stays")

        // A refused swap is recorded with its time and shown.
        result = try await h.cli(["providers", "swap", "cloud", "--", "/bin/sh", "-c", "echo broken build >&2; exit 4"])
        #expect(result.status == 1)
        result = try await h.cli(["providers", "list", "--format", "json"])
        cloud = try Self.provider(result.stdout)
        #expect((cloud["last_refused_swap"] as? String)?.contains("broken build") == true)
        #expect(Self.number(cloud, "last_refused_swap_unix_nano") > problemAt)
        #expect(cloud["state"] as? String == "running", "the old shim keeps serving")
        result = try await h.cli(["providers", "list"])
        let refused = try #require(result.stdout.split(separator: "\n").first { $0.hasPrefix("cloud: swap refused at ") })
        #expect(refused.count <= 120)
        let refusedAt = try #require(refused.firstMatch(of: /swap refused at (\S+): provider cloud: shim failed to start/))
        #expect(Self.isRFC3339(refusedAt.1))
        #expect(try await h.stop(controller) == 0)
    }

    @Test func theFakeShimNamesAMissingScenarioByItsAbsolutePath() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let shim = try await ChildProcess.spawn(
            BuiltProducts.path(of: "provider-shim"), ["fake", "--scenario", "nope.yaml"],
            environment: ["INSTANCEPOLLER_SOCKET": directory.file("s.sock")], workingDirectory: directory.path
        )
        #expect(try await shim.waitForExit() == 2)
        #expect(try await shim.output().stderr == "provider-shim fake: cannot read scenario \(directory.path)/nope.yaml: No such file or directory\n")
    }
}
