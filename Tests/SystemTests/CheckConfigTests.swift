import Foundation
import Testing
import TestSupport

/// `instancepoller check-config FILE`, the real binary: every problem one
/// line on stderr (`FILE:LINE: …`), a summary on stdout, exit 0, 1 or 2;
/// nothing of a running controller's is touched.
@Suite("check-config with the real binaries")
struct CheckConfigTests {
    /// `instancepoller check-config ARGS` run in the test's directory (the
    /// config named relative to it, as an operator types it).
    static func check(_ h: ControllerHarness, _ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let child = try await ChildProcess.spawn(
            "/bin/sh", ["-c", "cd \"$1\" && shift && exec \"$@\"", "sh", h.directory.path, BuiltProducts.path(of: "instancepoller"), "check-config"] + arguments
        )
        child.closeStdin()
        let status = try await child.waitForExit(.seconds(60))
        let output = try await child.output()
        return (status, output.stdout, output.stderr)
    }

    static func write(_ h: ControllerHarness, _ name: String, _ text: String, mode: Int = 0o600) throws -> String {
        let path = h.directory.file(name)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(chmod(path, mode_t(mode)) == 0)
        return path
    }

    /// A fake cloud that knows credential main (token letmein) only.
    static func scenario(_ h: ControllerHarness) throws -> String {
        try h.scenario("cloud", """
            name: check
            credentials:
              - name: main
                attributes: {token: letmein}
            instances: []
            """)
    }

    @Test func aGoodConfigIsOKAndShowsEachProvidersEffectivePollSettings() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try Self.scenario(h)
        try h.writeConfig(providers: [
            h.fakeProvider("cloud", scenario: scenario),
            h.fakeProvider("slow", scenario: scenario) + "\n    poll:\n      long_poll: 30m\n      call_timeout: 45s",
        ], settings: ControllerHarness.fastSettings + "\nmetrics:\n  address: 127.0.0.1:9464")
        // Its inline credentials would be a warning in a file others can read.
        #expect(chmod(h.configPath, 0o600) == 0)
        let result = try await Self.check(h, ["config.yaml"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty, "\(result.stderr)")
        #expect(result.stdout.hasSuffix("\nconfig OK\n"), "\(result.stdout)")
        let lines = result.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(lines.contains("store sqlite \(h.storePath)"), "\(result.stdout)")
        #expect(lines.contains("runtime dir \(h.runtimeDirectory)"), "\(result.stdout)")
        #expect(lines.contains("metrics http://127.0.0.1:9464/metrics"), "\(result.stdout)")
        #expect(lines.contains("credentials 2 (cloud/main, slow/main)"), "\(result.stdout)")
        // The config's poll: for cloud; slow's own block over it, key by key.
        #expect(lines.contains { $0.hasPrefix("cloud fake 0.1s 2 0.4s 15m 0.1 200 10s \(BuiltProducts.path(of: "provider-shim")) fake") }, "\(result.stdout)")
        #expect(lines.contains { $0.hasPrefix("slow fake 0.1s 2 0.4s 30m 0.1 200 45s (own poll:) ") }, "\(result.stdout)")

        let json = try await Self.check(h, ["config.yaml", "--format", "json"])
        #expect(json.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["ok"] as? Bool == true)
        #expect((object["problems"] as? [Any])?.isEmpty == true)
        let providers = try #require(object["providers"] as? [[String: Any]])
        #expect(providers.map { $0["name"] as? String } == ["cloud", "slow"])
        let slow = try #require(providers.last?["poll"] as? [String: Any])
        #expect(slow["long_poll"] as? String == "30m" && slow["short_poll"] as? String == "0.1s" && slow["call_timeout"] as? String == "45s")
        #expect(providers.last?["own_poll"] as? Bool == true && providers.first?["own_poll"] as? Bool == false)
        // Checked, not made: no runtime directory, no store.
        #expect(!FileManager.default.fileExists(atPath: h.runtimeDirectory))
    }

    @Test func severalProblemsAreAllListedOneLineEachWithTheirLines() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try Self.scenario(h)
        _ = try Self.write(h, "open.yaml", "token: open-secret-1\n", mode: 0o644)
        _ = try Self.write(h, "config.yaml", """
            store: store.db
            runtime_directory: run
            colour: blue
            metrics:
              address: 10.0.0.1:9464
            poll:
              short_poll: -5s
            providers:
              cloud:
                shim:
                  command: \(BuiltProducts.path(of: "provider-shim"))
                  args: [fake, --scenario, \(scenario)]
                cloud:
                  type: fake
              gone:
                shim:
                  command: ./no-such-shim
                cloud:
                  type: fake
            credentials:
              - provider: cloud
                name: main
                auth_type: token
                file: open.yaml
              - provider: nowhere
                name: x
                auth_type: token
                attributes: {token: a}

            """)
        let result = try await Self.check(h, ["config.yaml"])
        #expect(result.status == 1)
        let problems = result.stderr.split(separator: "\n").map(String.init)
        #expect(problems == [
            "config.yaml:3: unknown key \"colour\" (expected one of: \(Self.topLevelKeys(problems.first ?? "")))",
            "config.yaml:5: metrics.address: 10.0.0.1 is not a loopback address; metrics are served on 127.0.0.1, ::1 or localhost only",
            "config.yaml:7: poll.short_poll: expected a duration such as 90s, 250ms or 2m, not \"-5s\"",
            "config.yaml:17: providers.gone.shim.command: no executable \"./no-such-shim\" (looked \(h.directory.file("no-such-shim")))",
            "config.yaml:24: credentials[0].file: \(h.directory.file("open.yaml")) is readable by others (mode 644); chmod 600 it",
            "config.yaml:25: credentials[1].provider: no provider \"nowhere\" under providers",
            "6 problems in config.yaml",
        ], "\(result.stderr)")
        #expect(!result.stdout.contains("config OK"))
        #expect(!(result.stdout + result.stderr).contains("open-secret-1"))
        // What could be read is still summarized.
        #expect(result.stdout.contains("providers    1 (gone not checked: see the problems)"), "\(result.stdout)")
    }

    /// The key list the config reader names in an unknown-key error (it
    /// grows as features do; the test checks the line's shape around it).
    static func topLevelKeys(_ line: String) -> String {
        guard let start = line.range(of: "(expected one of: "), line.hasSuffix(")") else { return "?" }
        return String(line[start.upperBound..<line.index(before: line.endIndex)])
    }

    @Test func aWorldReadableCredentialFileIsAProblemAndItsSecretIsNeverShown() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try Self.scenario(h)
        _ = try Self.write(h, "cred.yaml", "token: letmein-readable\n", mode: 0o604)
        _ = try Self.write(h, "config.yaml", """
            store: store.db
            runtime_directory: run
            providers:
            \(h.fakeProvider("cloud", scenario: scenario))
            credentials:
              - provider: cloud
                name: main
                auth_type: token
                file: cred.yaml

            """)
        let result = try await Self.check(h, ["config.yaml"])
        #expect(result.status == 1)
        #expect(result.stderr == """
            config.yaml:14: credentials[0].file: \(h.directory.file("cred.yaml")) is readable by others (mode 604); chmod 600 it
            1 problem in config.yaml

            """, "\(result.stderr)")
        #expect(!(result.stdout + result.stderr).contains("letmein-readable"))
        #expect(chmod(h.directory.file("cred.yaml"), 0o600) == 0)
        let fixed = try await Self.check(h, ["config.yaml"])
        #expect(fixed.status == 0 && fixed.stdout.hasSuffix("config OK\n"), "\(fixed.stderr)")
    }

    @Test func aMissingOrNonExecutableShimIsAProblem() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        _ = try Self.write(h, "not-executable", "#!/bin/sh\n", mode: 0o644)
        _ = try Self.write(h, "config.yaml", """
            store: store.db
            runtime_directory: run
            providers:
              a:
                shim:
                  command: /nonexistent/provider-shim
                cloud: {type: fake}
              b:
                shim:
                  command: ./not-executable
                cloud: {type: fake}
              c:
                shim:
                  command: no-such-shim-on-path
                cloud: {type: fake}

            """)
        let result = try await Self.check(h, ["config.yaml"])
        #expect(result.status == 1)
        let problems = result.stderr.split(separator: "\n").map(String.init)
        #expect(problems.count == 4, "\(result.stderr)")
        #expect(problems.first == "config.yaml:6: providers.a.shim.command: no executable \"/nonexistent/provider-shim\" (looked /nonexistent/provider-shim)")
        #expect(problems.dropFirst().first == "config.yaml:10: providers.b.shim.command: no executable \"./not-executable\" (looked \(h.directory.file("not-executable")))")
        #expect(problems.dropFirst(2).first?.hasPrefix("config.yaml:14: providers.c.shim.command: no executable \"no-such-shim-on-path\" (looked next to instancepoller and on PATH)") == true, "\(problems)")
        #expect(problems.last == "3 problems in config.yaml")
    }

    @Test func badYAMLIsNamedByFileAndLine() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        _ = try Self.write(h, "config.yaml", "store: store.db\nproviders:\n  cloud: [\n")
        let result = try await Self.check(h, ["config.yaml"])
        #expect(result.status == 1)
        let problems = result.stderr.split(separator: "\n").map(String.init)
        #expect(problems.count == 2, "\(result.stderr)")
        #expect(problems.first?.hasPrefix("config.yaml:4: not valid YAML: ") == true, "\(result.stderr)")
        #expect(problems.last == "1 problem in config.yaml")
        #expect(result.stdout == "config       config.yaml\n")
    }

    @Test func badArgumentsAndAnUnreadableFileAreUsageErrors() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let cases: [([String], String)] = [
            ([], "instancepoller: Missing expected argument '<FILE>' (see instancepoller check-config --help)\n"),
            (["a.yaml", "b.yaml"], "instancepoller: Unexpected argument 'b.yaml' (see instancepoller check-config --help)\n"),
            (["config.yaml", "--bogus"], "instancepoller: Unknown option '--bogus' (see instancepoller check-config --help)\n"),
            (["config.yaml", "--format", "jsonl"], "instancepoller: --format jsonl does not apply: check-config prints one document (use json or yaml) (see instancepoller check-config --help)\n"),
            (["missing.yaml"], "instancepoller: cannot read missing.yaml: No such file or directory\n"),
            (["."], "instancepoller: . is not a regular file\n"),
        ]
        for (arguments, stderr) in cases {
            let result = try await Self.check(h, arguments)
            #expect(result.status == 2, "\(arguments)")
            #expect(result.stderr == stderr, "\(arguments)")
            #expect(result.stdout.isEmpty, "\(arguments)")
        }
    }

    @Test func connectValidatesEachCredentialThroughTheRealShimAndStopsIt() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try Self.scenario(h)
        _ = try Self.write(h, "wrong.yaml", "token: wrong-secret-7f3a\n")
        _ = try Self.write(h, "config.yaml", """
            store: store.db
            runtime_directory: run
            providers:
            \(h.fakeProvider("cloud", scenario: scenario))
            credentials:
              - provider: cloud
                name: main
                auth_type: token
                attributes: {token: letmein}
              - provider: cloud
                name: other
                auth_type: token
                file: wrong.yaml

            """)
        let result = try await Self.check(h, ["config.yaml", "--connect"])
        #expect(result.status == 1)
        #expect(result.stderr == """
            config.yaml:15: credential cloud/other is invalid: AuthFailure: the fake cloud does not know credential "other"
            1 problem in config.yaml

            """, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(lines.contains("cloud fake 0.1.0 serving"), "\(result.stdout)")
        #expect(lines.contains("cloud/main valid -"), "\(result.stdout)")
        #expect(lines.contains("cloud/other invalid AuthFailure: the fake cloud does not know credential \"other\""), "\(result.stdout)")
        for secret in ["letmein\n", "letmein ", "wrong-secret-7f3a"] {
            #expect(!(result.stdout + result.stderr).contains(secret), "a secret reached the output")
        }
        let yaml = try await Self.check(h, ["config.yaml", "--connect", "--format", "yaml"])
        #expect(yaml.status == 1)
        #expect(!(yaml.stdout + yaml.stderr).contains("wrong-secret-7f3a") && !yaml.stdout.contains("letmein"))
        #expect(yaml.stdout.contains("  result: valid\n") && yaml.stdout.contains("  result: invalid\n"), "\(yaml.stdout)")
        // The shims were stopped, and the controller's runtime directory never made.
        #expect(h.processesOfThisTest().isEmpty, "no shim outlives check-config")
        #expect(!FileManager.default.fileExists(atPath: h.runtimeDirectory))
    }

    @Test func aRuntimeDirectoryHeldByARunningControllerIsReportedAndLeftAlone() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: try Self.scenario(h))])
        #expect(chmod(h.configPath, 0o600) == 0)
        let controller = try await h.start()
        let before = h.runtimeEntries()
        let result = try await Self.check(h, ["config.yaml"])
        #expect(result.status == 1)
        #expect(result.stderr == """
            config.yaml:2: runtime_directory: \(h.runtimeDirectory) is in use by a running controller (pid \(controller.pid)); a second controller with this config could not start
            1 problem in config.yaml

            """, "\(result.stderr)")
        #expect(h.runtimeEntries() == before, "nothing in it was touched")
        #expect(try await h.cli(["status"]).status == 0, "the controller still answers")
        #expect(try await h.stop(controller) == 0)
        let after = try await Self.check(h, ["config.yaml"])
        #expect(after.status == 0, "\(after.stderr)")
    }
}
