import Controller
import Support
import ControlAPI
import Core
import Foundation
import Testing
import TestSupport

/// The `instancepoller` CLI end to end: each subcommand against a running
/// controller, bad arguments, no controller, the metrics endpoint, the demo.
@Suite("CLI end to end")
struct CLITests {
    static let secret = "s3cret-value-never-printed"

    /// A fake cloud that knows one credential (so a wrong one is refused).
    static func scenario(_ h: ControllerHarness, address: String = "10.1.0.1") throws -> String {
        try h.scenario("cli-\(address)", ControllerHarness.runningInstances([("c-1", address), ("c-2", "10.1.0.2")], extra: """
            credentials:
              - name: main
                attributes: {token: letmein}
              - name: ops
                attributes: {token: \(secret)}

            """))
    }

    @Test func machinesCommandsAgainstARunningController() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: try Self.scenario(h))])
        let controller = try await h.start()

        var result = try await h.cli(["machines", "add", "m1", "--provider", "cloud", "--credential", "main", "--instance-id", "c-1"])
        #expect(result.status == 0)
        #expect(result.stdout == "added machine m1\n")
        result = try await h.cli(["machines", "add", "m2", "--provider", "cloud", "--credential", "main", "--instance-id", "c-2", "--agent-status", "pending"])
        #expect(result.status == 0)

        result = try await h.cli(["machines", "add", "m1", "--provider", "cloud", "--credential", "main"])
        #expect(result.status == 1)
        #expect(result.stderr == "instancepoller: machine \"m1\" already exists\n")
        result = try await h.cli(["machines", "add", "m3", "--provider", "gcp", "--credential", "main"])
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: provider: no provider \"gcp\" is configured (configured: cloud)\n")
        result = try await h.cli(["machines", "add", "m3", "--provider", "cloud", "--credential", "main", "--agent-status", "sleepy"])
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("instancepoller: agent_status: unknown agent status \"sleepy\""))

        try await h.waitForMachines("both machines to get their addresses") {
            $0["m1"]?.addressValues == ["10.1.0.1"] && $0["m2"]?.addressValues == ["10.1.0.2"]
        }
        result = try await h.cli(["machines", "list"])
        #expect(result.status == 0)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("ID  PROVIDER  INSTANCE  STATE    AGENT    GROUP") == true)
        #expect(lines.count == 3)
        #expect(lines[1].hasPrefix("m1  cloud     c-1       running  none     long"))
        #expect(lines[1].contains("10.1.0.1"))
        #expect(lines[2].hasPrefix("m2  cloud     c-2       running  pending  short"), "a pending agent keeps it short")

        result = try await h.cli(["machines", "list", "--format", "json"])
        let machines = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        #expect(machines.map { $0["id"] as? String } == ["m1", "m2"])
        #expect(machines[0]["instance_id"] as? String == "c-1")

        result = try await h.cli(["machines", "show", "m1"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("status       running (running)"))
        #expect(result.stdout.contains("  address    10.1.0.1 (cloud-local)"))
        #expect(result.stdout.contains("schedule     long group"))

        result = try await h.cli(["machines", "set-agent-status", "m2", "started"])
        #expect(result.status == 0)
        #expect(result.stdout == "machine m2: agent started\n")
        try await h.waitForMachines("m2's agent status") { $0["m2"]?.agentStatus == .started }

        result = try await h.cli(["status"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("machines    2 (2 running)"))
        #expect(result.stdout.contains("cloud     fake   running"))

        result = try await h.cli(["machines", "remove", "m2"])
        #expect(result.status == 0)
        result = try await h.cli(["machines", "remove", "m2"])
        #expect(result.status == 1)
        #expect(result.stderr == "instancepoller: no machine \"m2\"\n")
        #expect(try await h.store.machines().map(\.id) == ["m1"])
        #expect(try await h.stop(controller) == 0)
    }

    @Test func credentialsNeverShowTheirSecrets() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: try Self.scenario(h))])
        let controller = try await h.start()

        let file = h.directory.file("ops.yaml")
        FileManager.default.createFile(atPath: file, contents: Data("token: \(Self.secret)\n".utf8), attributes: [.posixPermissions: 0o600])
        var result = try await h.cli(["credentials", "set", "cloud", "ops", "--auth-type", "token", "--file", file])
        #expect(result.status == 0)
        #expect(result.stdout == "credential cloud/ops set (attributes: token)\n")

        chmod(file, 0o644)
        result = try await h.cli(["credentials", "set", "cloud", "ops", "--auth-type", "token", "--file", file])
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: --file: \(file) is readable by others (mode 644); chmod 600 it\n")

        result = try await h.cli(["credentials", "set", "cloud", "bad", "--auth-type", "token", "--file", "-"], stdin: "token: wrong-\(Self.secret)\n")
        #expect(result.status == 0)

        result = try await h.cli(["credentials", "list"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("cloud     ops   token  token"))
        result = try await h.cli(["credentials", "validate", "cloud", "ops"])
        #expect(result.status == 0)
        #expect(result.stdout == "credential cloud/ops is valid\n")
        result = try await h.cli(["credentials", "validate", "cloud", "bad"])
        #expect(result.status == 1)
        #expect(result.stdout.hasPrefix("credential cloud/bad is not valid: "))
        result = try await h.cli(["credentials", "validate", "cloud", "nope"])
        #expect(result.status == 1)
        #expect(result.stderr == "instancepoller: no credential cloud/nope\n")

        var everything = ""
        for command in [["credentials", "list"], ["credentials", "list", "--format", "json"], ["status", "--format", "json"], ["watch", "--after", "0", "--no-follow"]] {
            let output = try await h.cli(command)
            everything += output.stdout + output.stderr
        }
        _ = try await h.stop(controller)
        everything += try await controller.output().stderr
        #expect(!everything.contains(Self.secret), "a secret reached the output or the log")
        #expect(!everything.contains("letmein"))
    }

    /// `credentials set --file` reads only the invoking user's own file,
    /// private to them: another uid's file is refused even at 0600 (as the
    /// config's credential files), in one line naming its owner and mode,
    /// before any controller is asked.
    @Test func credentialFilesMustBeTheInvokingUsersOwnAndPrivate() async throws {
        try #require(getuid() == 0, "giving a file to another uid needs root (CI runs as root)")
        let h = try ControllerHarness()
        defer { h.remove() }
        let file = h.directory.file("theirs.yaml")
        FileManager.default.createFile(atPath: file, contents: Data("token: \(Self.secret)\n".utf8), attributes: [.posixPermissions: 0o600])
        let set = ["credentials", "set", "cloud", "ops", "--auth-type", "token", "--file", file]

        #expect(chown(file, 65534, 65534) == 0)
        var result = try await h.cli(set)
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: --file: \(file) belongs to uid 65534, not to this user (uid 0); mode 600\n")

        #expect(chown(file, 0, 0) == 0 && chmod(file, 0o640) == 0)
        result = try await h.cli(set)
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: --file: \(file) is readable by others (mode 640); chmod 600 it\n")

        // Its own private file passes, and only the missing controller stops it.
        #expect(chmod(file, 0o600) == 0)
        result = try await h.cli(set)
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("instancepoller: no controller is running"), "\(result.stderr)")
        #expect(!(result.stdout + result.stderr).contains(Self.secret))
    }

    @Test func providersListSwapAndWatch() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: try Self.scenario(h))])
        let controller = try await h.start()
        try await h.waitForShims(controller, count: 1)

        // Follow the log from now on, in the background.
        let watcher = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), ["watch", "--runtime-dir", h.runtimeDirectory])
        try await watcher.stderrLines.waitForLine(containing: "following events after revision")
        #expect(try await watcher.nextLine()?.hasPrefix("REVISION  TIME") == true, "the table's header")
        _ = try await h.cli(["machines", "add", "w1", "--provider", "cloud", "--credential", "main", "--instance-id", "c-1"])
        // Columns are padded: compare words.
        let added = try #require(try await watcher.nextLine()).split(separator: " ").joined(separator: " ")
        #expect(added.contains("machine-added external w1"))
        let polled = try #require(try await watcher.nextLine()).split(separator: " ").joined(separator: " ")
        #expect(polled.contains("instance-status-changed poller w1 unspecified -> running"), "old and new status")
        watcher.terminate()

        var result = try await h.cli(["providers", "list"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("cloud     fake   running"))

        let other = try Self.scenario(h, address: "10.7.0.1")
        result = try await h.cli(["providers", "swap", "cloud", "--", BuiltProducts.path(of: "provider-shim"), "fake", "--scenario", other])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("provider cloud swapped: shim pid "))
        result = try await h.cli(["providers", "list", "--format", "json"])
        #expect(result.stdout.contains(other))

        result = try await h.cli(["providers", "swap", "cloud", "--", "/bin/sh", "-c", "echo broken build >&2; exit 4"])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("instancepoller: swap refused, the old shim keeps serving:"))
        #expect(result.stderr.contains("broken build"))
        result = try await h.cli(["providers", "swap", "cloud", "--", "no-such-shim"])
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: command: no executable \"no-such-shim\" (looked next to instancepoller and on PATH)\n")
        result = try await h.cli(["providers", "swap", "cloud"])
        #expect(result.status == 2)

        result = try await h.cli(["watch", "--after", "0", "--no-follow", "--format", "json"])
        let kinds = result.stdout.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["kind"] as? String
        }
        #expect(kinds.prefix(2) == ["credential-set", "machine-added"])
        #expect(try await h.stop(controller) == 0)
    }

    @Test(arguments: [
        (["machines", "add"], "instancepoller: Missing expected argument '<id>' (see instancepoller machines add --help)\n"),
        (["machines", "frobnicate"], "instancepoller: unknown subcommand \"frobnicate\" (machines has: add, remove, list, show, set-agent-status, import)\n"),
        (["status", "--format", "xml"], "instancepoller: The value 'xml' is invalid for '--format <format>'. Please provide one of 'table', 'json', 'jsonl' or 'yaml'. (see instancepoller status --help)\n"),
        (["demo", "--duration", "0"], "instancepoller: --duration must be more than 0 and at most 86400 seconds (see instancepoller demo --help)\n"),
        // Issue 17: usage errors point to the subcommand; an id that looks like an option.
        (["machines", "add", "m1", "--provider", "p"],
         "instancepoller: Missing expected argument '--credential <credential>' (see instancepoller machines add --help)\n"),
        (["watch", "--after", "1", "--last", "2"], "instancepoller: give --after or --last, not both (see instancepoller watch --help)\n"),
        (["machines", "add", "-dash", "--provider", "p", "--credential", "c"],
         "instancepoller: \"-dash\" looks like an option; to use it as a machine id, put -- before it (after the options)\n"),
        (["machines", "remove", "-dash"],
         "instancepoller: \"-dash\" looks like an option; to use it as a machine id, put -- before it (after the options)\n"),
        (["machines", "show", "-dash"],
         "instancepoller: \"-dash\" looks like an option; to use it as a machine id, put -- before it (after the options)\n"),
        (["machines", "set-agent-status", "-dash", "started"],
         "instancepoller: \"-dash\" looks like an option; to use it as a machine id, put -- before it (after the options)\n"),
    ])
    func badArgumentsExitTwoWithOneLine(arguments: [String], expected: String) async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let result = try await h.cli(arguments, runtimeDir: false)
        #expect(result.status == 2)
        #expect(result.stderr == expected)
        #expect(result.stdout.isEmpty)
    }

    @Test func withNoControllerEveryCommandSaysSoInOneLine() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        for command in [["status"], ["machines", "list"], ["credentials", "list"], ["providers", "list"], ["watch"]] {
            let result = try await h.cli(command)
            #expect(result.status == 1)
            #expect(result.stderr == "instancepoller: no controller is running (no socket at \(h.runtimeDirectory)/control.sock); start one with `instancepoller run --config FILE`, or pass --runtime-dir or --config\n")
        }
    }

    @Test func metricsAreServedOnLoopback() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(
            providers: [h.fakeProvider("cloud", scenario: try Self.scenario(h))],
            settings: ControllerHarness.fastSettings + "\nmetrics:\n  address: 127.0.0.1:0"
        )
        let controller = try await h.start()
        let serving = try await controller.stderrLines.waitForLine(containing: "serving metrics")
        let url = try #require(logValue("address", in: serving.line))
        let port = try #require(url.split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) })
        try await h.add("m1", provider: "cloud", instance: "c-1")
        try await h.waitForMachines("m1 to converge") { $0["m1"]?.addressValues == ["10.1.0.1"] }

        let response = try await HTTP.get(port: port, path: "/metrics")
        #expect(response.hasPrefix("HTTP/1.1 200 OK"))
        for series in [
            "instancepoller_polls_total{provider=\"cloud\",result=\"ok\"}",
            "instancepoller_provider_calls_total{provider=\"cloud\",method=\"Instances\",result=\"ok\"}",
            "instancepoller_provider_calls_total{provider=\"cloud\",method=\"ValidateCredential\",result=\"ok\"}",
            "instancepoller_provider_call_duration_seconds_bucket{provider=\"cloud\",method=\"NetworkInterfaces\",le=",
            "instancepoller_batch_size_bucket{provider=\"cloud\",le=",
            "instancepoller_machines{group=\"long\"} 1",
            "instancepoller_credential_valid{provider=\"cloud\",credential=\"main\"} 1",
            "instancepoller_shim_up{provider=\"cloud\"} 1",
        ] {
            #expect(response.contains(series), "missing \(series)")
        }
        #expect(!response.contains("letmein"))
        #expect(try await HTTP.get(port: port, path: "/other").hasPrefix("HTTP/1.1 404"))
        #expect(try await h.stop(controller) == 0)
    }

    @Test func theDemoRunsToTheEndAndLeavesNothingBehind() async throws {
        let demo = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), ["demo", "--duration", "5"])
        #expect(try await demo.waitForExit(.seconds(60)) == 0)
        let output = try await demo.output()
        let lines = output.stdout.split(separator: "\n").map(String.init)
        let working = try #require(lines.first { $0.contains("working in ") })
        let directory = try #require(working.split(separator: " ").first { $0.hasPrefix("/tmp/instancepoller-demo-") }.map(String.init))
        #expect(lines.contains { $0.contains("▶ 20 machines added on two clouds") })
        #expect(lines.contains { $0.contains("→ running") }, "machines come up within 5 s")
        #expect(lines.last == "demo finished: the shims are stopped and \(directory) is removed")
        #expect(!FileManager.default.fileExists(atPath: directory))
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int32.init).filter {
            ProcessTree.isAlive($0) && ProcessTree.commandLine(of: $0).contains(directory)
        }
        #expect(left.isEmpty, "processes left behind: \(left)")
    }
}

/// A minimal HTTP/1.1 GET over a plain socket (tests only; loopback).
enum HTTP {
    /// - Parameter headers: extra request header lines, e.g. "Authorization: Bearer x".
    static func get(port: Int, path: String, headers: [String] = []) async throws -> String {
        try await withTimeout(.seconds(10), "GET \(path)") {
            try await withCheckedThrowingContinuation { continuation in
                Thread.detachNewThread {
                    continuation.resume(with: Result { try blockingGet(port: port, path: path, headers: headers) })
                }
            }
        }
    }

    struct Failed: Error { var what: String }

    private static func blockingGet(port: Int, path: String, headers: [String]) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failed(what: "socket") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failed(what: "connect: errno \(errno)") }
        let extra = headers.map { "\($0)\r\n" }.joined()
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(extra)Connection: close\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { throw Failed(what: "write") }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            response += buffer[0..<count]
        }
        return String(decoding: response, as: UTF8.self)
    }
}
