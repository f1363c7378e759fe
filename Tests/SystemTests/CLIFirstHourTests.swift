import Controller
import Support
import ControlAPI
import Core
import Foundation
import Testing
import TestSupport

/// What someone meets in their first hour with the CLI: output that can be
/// piped into `head`, a `watch` people can read, usage errors that say
/// where to look, a config with a mistake that still finds the controller,
/// and help that names the directories, variables and exit codes.
/// One controller at a time: the suite runs beside the rest.
@Suite("CLI first hour: output and usage", .serialized)
struct CLIFirstHourTests {
    static func start(_ h: ControllerHarness) async throws -> ChildProcess {
        let scenario = try h.scenario("first-hour", ControllerHarness.runningInstances([("c-1", "10.1.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        return try await h.start()
    }

    /// `instancepoller ARGS --runtime-dir DIR | head -1` under bash (no
    /// pipefail): its stdout is head's line and then `status=N`, the CLI's
    /// own exit status; the CLI's stderr goes to `stderrFile`.
    ///
    /// - Parameter ignoringSIGPIPE: the CLI starts with SIGPIPE ignored (as
    ///   under some supervisors), so a write to the closed pipe fails with
    ///   EPIPE instead of ending the process.
    static func pipedIntoHead(
        _ h: ControllerHarness, _ arguments: [String], stderrFile: String, ignoringSIGPIPE: Bool
    ) async throws -> ChildProcess {
        // env sets the CLI's SIGPIPE disposition whatever this process's is.
        let words = ["/usr/bin/env", ignoringSIGPIPE ? "--ignore-signal=PIPE" : "--default-signal=PIPE", BuiltProducts.path(of: "instancepoller")]
            + arguments + ["--runtime-dir", h.runtimeDirectory]
        let command = words.map { "'\($0)'" }.joined(separator: " ")
        let script = "\(command) 2>'\(stderrFile)' | head -1; echo status=${PIPESTATUS[0]}"
        return try await ChildProcess.spawn("/bin/bash", ["-c", script])
    }

    static func noCrash(_ stderr: String) -> Bool {
        let lowered = stderr.lowercased()
        return !lowered.contains("fatal error") && !lowered.contains("crash") && !lowered.contains("backtrace")
    }

    // MARK: - Item 1: a closed output pipe

    @Test func everyListingEndsQuietlyWhenItsReaderGoesAway() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let controller = try await Self.start(h)
        // Enough output that every big listing outgrows the pipe's 64 KiB
        // buffer: the reader is gone long before the CLI is done.
        let ids = (1...3000).map { "rack-07.zone-b.example.internal-host-\(String(format: "%04d", $0))" }
        let csv = h.directory.file("fleet.csv")
        try ("id,provider,credential,instance_id\n" + ids.map { "\($0),cloud,main,\n" }.joined())
            .write(toFile: csv, atomically: true, encoding: .utf8)
        let imported = try await h.cli(["machines", "import", csv])
        #expect(imported.status == 0, "\(imported.stderr)")

        let listings: [(arguments: [String], big: Bool, first: String)] = [
            (["status"], false, "controller  pid "),
            (["machines", "list"], true, "ID "),
            (["machines", "list", "--format", "json"], true, "["),
            (["machines", "list", "--format", "jsonl"], true, "{\"id\":\"\(ids[0])\""),
            (["machines", "list", "--ids-only"], true, ids[0]),
            (["machines", "show", ids[0]], false, "id           \(ids[0])"),
            (["credentials", "list"], false, "PROVIDER"),
            (["providers", "list"], false, "PROVIDER"),
            (["watch", "--after", "0", "--no-follow"], true, "REVISION"),
            (["watch", "--after", "0", "--no-follow", "--format", "jsonl"], true, "{\"revision\""),
        ]
        for ignoring in [false, true] {
        for (index, listing) in listings.enumerated() {
            let stderrFile = h.directory.file("stderr-\(index)-\(ignoring)")
            let pipeline = try await Self.pipedIntoHead(h, listing.arguments, stderrFile: stderrFile, ignoringSIGPIPE: ignoring)
            #expect(try await pipeline.waitForExit(.seconds(60)) == 0)
            let lines = try await pipeline.output().stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            #expect(lines.count == 3 && lines[2].isEmpty, "\(listing.arguments): head printed one line: \(lines.prefix(3))")
            #expect(lines.first?.hasPrefix(listing.first) == true, "\(listing.arguments): \(lines.first ?? "")")
            let status = lines.count > 1 ? lines[1] : ""
            // A big listing cannot finish before its reader went away: 141,
            // as a shell reports a command ended by SIGPIPE.
            #expect(listing.big ? status == "status=141" : ["status=0", "status=141"].contains(status), "\(listing.arguments): \(status)")
            let stderr = (try? String(contentsOfFile: stderrFile, encoding: .utf8)) ?? "unreadable"
            #expect(stderr.isEmpty, "\(listing.arguments): \(stderr)")
            #expect(Self.noCrash(stderr))
        }
        }

        // Following: the reader goes after the header; the CLI learns it
        // at its next write, when an event comes.
        for ignoring in [false, true] {
        let stderrFile = h.directory.file("stderr-follow-\(ignoring)")
        let pipeline = try await Self.pipedIntoHead(h, ["watch", "--last", "5"], stderrFile: stderrFile, ignoringSIGPIPE: ignoring)
        #expect(try await pipeline.nextLine()?.hasPrefix("REVISION") == true)
        var exited: Int32?
        for index in 0..<20 where exited == nil {
            let added = try await h.cli(["machines", "add", "late-\(ignoring)-\(index)", "--provider", "cloud", "--credential", "main"])
            #expect(added.status == 0)
            exited = try? await pipeline.waitForExit(.seconds(3))
        }
        #expect(exited == 0)
        #expect(try await pipeline.nextLine() == "status=141")
        let stderr = (try? String(contentsOfFile: stderrFile, encoding: .utf8)) ?? "unreadable"
        #expect(Self.noCrash(stderr))
        #expect(stderr.split(separator: "\n").allSatisfy { $0.hasPrefix("following events after revision ") }, "\(stderr)")
        }
        #expect(try await h.stop(controller) == 0)
    }

    /// Runs the CLI with SIGPIPE ignored and stdout and stderr on a pipe
    /// whose reader is already gone: (ended by a signal, exit status or signal).
    static func intoAClosedPipe(_ arguments: [String]) async throws -> (signaled: Bool, status: Int32) {
        try await onOwnThread {
            var ends: [Int32] = [0, 0]
            guard pipe(&ends) == 0 else { throw POSIXError(.EIO) }
            close(ends[0])
            defer { close(ends[1]) }
            let nothing = open("/dev/null", O_RDONLY | O_CLOEXEC)
            defer { close(nothing) }
            return try ChildProcess.runToEnd(
                "/usr/bin/env", ["--ignore-signal=PIPE", BuiltProducts.path(of: "instancepoller")] + arguments,
                stdin: nothing, stdout: ends[1], stderr: ends[1])
        }
    }

    /// The one line on stderr cannot be written either: the CLI still
    /// exits with its status (FileHandle's write would trap on EPIPE).
    @Test func aClosedStderrEndsTheCLIWithItsStatusNotACrash() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        var ended = try await Self.intoAClosedPipe(["status", "--runtime-dir", h.runtimeDirectory])
        #expect(!ended.signaled && ended.status == 1, "no controller: \(ended)")
        ended = try await Self.intoAClosedPipe(["machines", "bogus"])
        #expect(!ended.signaled && ended.status == 2, "usage error: \(ended)")
        ended = try await Self.intoAClosedPipe(["machines", "show"])
        #expect(!ended.signaled && ended.status == 2, "usage error: \(ended)")
    }

    // MARK: - Item 7: watch for people

    /// The columns of a `watch` table line: the revision, then the rest
    /// at fixed offsets (widths 8, 20, 23, 8 and 16, two spaces apart).
    static func columns(_ line: String) -> (revision: String, time: String, kind: String, source: String, subject: String, detail: String) {
        let characters = Array(line)
        func cut(_ from: Int, _ width: Int?) -> String {
            guard from < characters.count else { return "" }
            let end = width.map { min(from + $0, characters.count) } ?? characters.count
            return String(characters[from..<end]).trimmingCharacters(in: .whitespaces)
        }
        return (cut(0, 8), cut(10, 20), cut(32, 23), cut(57, 8), cut(67, 16), cut(85, nil))
    }

    static let header = "REVISION  " + "TIME".padding(toLength: 20, withPad: " ", startingAt: 0) + "  "
        + "KIND".padding(toLength: 23, withPad: " ", startingAt: 0) + "  " + "SOURCE    " + "SUBJECT".padding(toLength: 16, withPad: " ", startingAt: 0)
        + "  DETAIL"

    @Test func watchPrintsAHeaderAlignedColumnsAndWhatChanged() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let controller = try await Self.start(h)
        var result = try await h.cli(["machines", "add", "m1", "--provider", "cloud", "--credential", "main", "--instance-id", "c-1"])
        #expect(result.status == 0, "\(result.stderr)")
        try await h.waitForMachines("m1 to get its address") { $0["m1"]?.addressValues == ["10.1.0.1"] }
        // The poller's other writes, as it would make them, on a machine
        // it does not poll (not provisioned).
        try await h.store.addMachine(Machine(id: "bare-1", provider: "cloud", credential: "main"))
        try await h.store.applyPoll([PollResult(machineID: "bare-1", pollError: "provider timed out")], schedule: [])
        try await h.store.applyPoll([PollResult(machineID: "bare-1", pollError: nil)], schedule: [])
        try await h.store.applyPoll([PollResult(machineID: "bare-1", agentError: "image not found")], schedule: [])

        result = try await h.cli(["watch", "--after", "0", "--no-follow"])
        #expect(result.status == 0, "\(result.stderr)")
        var lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == Self.header)
        let rows = lines.dropFirst().map(Self.columns)
        #expect(rows.map(\.kind) == [
            "credential-set", "machine-added", "instance-status-changed", "addresses-changed",
            "machine-added", "machine-polled", "machine-polled", "agent-status-changed",
        ], "\(result.stdout)")
        #expect(rows.map(\.subject) == ["cloud/main", "m1", "m1", "m1", "bare-1", "bare-1", "bare-1", "bare-1"])
        #expect(rows.map(\.source) == ["external", "external", "poller", "poller", "external", "poller", "poller", "poller"])
        #expect(rows.map(\.revision) == (1...8).map { "\($0)" }, "revisions in their column")
        #expect(lines.dropFirst().allSatisfy { $0.count > 8 && Array($0)[7] != " " && Array($0)[8] == " " }, "right-aligned revisions")
        let rfc3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/
        #expect(rows.allSatisfy { $0.time.wholeMatch(of: rfc3339) != nil }, "\(rows.map(\.time))")
        #expect(rows[0].detail == "-" && rows[1].detail == "-")
        #expect(rows[2].detail.hasPrefix("unspecified -> running"), "\(rows[2].detail)")
        #expect(rows[3].detail == "none -> 10.1.0.1")
        #expect(rows[5].detail == "poll error: none -> provider timed out")
        #expect(rows[6].detail == "poll error: provider timed out -> none")
        #expect(rows[7].detail == "none -> error: image not found")

        // --last N: the N latest.
        result = try await h.cli(["watch", "--last", "2", "--no-follow"])
        lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == Self.header)
        #expect(lines.dropFirst().map { Self.columns($0).revision } == ["7", "8"])

        // JSON: one event object per line, as before.
        result = try await h.cli(["watch", "--after", "0", "--no-follow", "--format", "json"])
        let objects = try result.stdout.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        #expect(objects.map { $0["revision"] as? String ?? "\($0["revision"] ?? "")" } == (1...8).map { "\($0)" })
        #expect(objects[3]["old_value"] == nil && objects[3]["new_value"] as? String == "10.1.0.1")

        // --no-follow alone: the last 20; and events come page by page.
        try await h.store.addMachines((1...1100).map { Machine(id: "bulk-\($0)", provider: "cloud", credential: "main") })
        result = try await h.cli(["watch", "--no-follow"])
        #expect(result.status == 0, "\(result.stderr)")
        lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == Self.header)
        #expect(lines.dropFirst().map { Self.columns($0).subject } == (1081...1100).map { "bulk-\($0)" })
        result = try await h.cli(["watch", "--after", "0", "--no-follow", "--format", "jsonl"])
        let revisions = result.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["revision"].map { "\($0)" }
        }
        #expect(revisions == (1...1108).map { "\($0)" }, "every event, over pages of at most 1000")

        // Following from the N latest.
        let watcher = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), ["watch", "--last", "1", "--runtime-dir", h.runtimeDirectory])
        #expect(try await watcher.nextLine() == Self.header)
        #expect(try await watcher.nextLine().map { Self.columns($0).subject } == "bulk-1100")
        result = try await h.cli(["machines", "add", "late", "--provider", "cloud", "--credential", "main"])
        let late = try #require(try await watcher.nextLine())
        #expect(Self.columns(late).kind == "machine-added" && Self.columns(late).subject == "late")
        watcher.terminate()
        #expect(try await h.stop(controller) == 0)
    }

    // MARK: - Item 8: usage errors, a config with mistakes, one line

    @Test func anUnknownTopLevelSubcommandListsTheCommands() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let result = try await h.cli(["bogus"], runtimeDir: false)
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("instancepoller: unknown subcommand \"bogus\" (instancepoller has: run, check-config, demo, status, machines, "))
        #expect(!result.stderr.contains("_fake-shim"), "hidden commands stay hidden")
        #expect(result.stderr.filter { $0 == "\n" }.count == 1)
    }

    @Test func anIDThatLooksLikeAnOptionGoesAfterDoubleDash() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let controller = try await Self.start(h)
        var result = try await h.cli(["machines", "add", "-dash", "--provider", "cloud", "--credential", "main"])
        #expect(result.status == 2)
        #expect(try await h.store.machines().isEmpty, "nothing added")
        result = try await h.cli(["machines", "add", "--provider", "cloud", "--credential", "main", "--", "-dash"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "added machine -dash\n")
        result = try await h.cli(["machines", "set-agent-status", "--", "-dash", "started"])
        #expect(result.status == 0, "\(result.stderr)")
        result = try await h.cli(["machines", "show", "--", "-dash"])
        #expect(result.stdout.hasPrefix("id           -dash\n"))
        result = try await h.cli(["machines", "remove", "--", "-dash"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try await h.store.machines().isEmpty)
        #expect(try await h.stop(controller) == 0)
    }

    @Test func aConfigWithOtherMistakesStillFindsTheController() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let controller = try await Self.start(h)
        let good = try String(contentsOfFile: h.configPath, encoding: .utf8)

        // A mistake elsewhere: one warning line, and the command runs.
        let broken = h.directory.file("broken.yaml")
        try good.replacingOccurrences(of: "short_poll: 100ms", with: "short_poll: 0s").write(toFile: broken, atomically: true, encoding: .utf8)
        var result = try await h.cli(["status", "--config", broken], runtimeDir: false)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("controller  pid \(controller.pid),"))
        #expect(result.stderr.hasPrefix("instancepoller: warning: \(broken):"), "\(result.stderr)")
        #expect(result.stderr.contains("poll.short_poll: must be more than zero"))
        #expect(result.stderr.hasSuffix("; using its runtime_directory\n"))
        #expect(result.stderr.filter { $0 == "\n" }.count == 1)

        // A credential file is not read: its trouble is none of the CLI's.
        let secretive = h.directory.file("secretive.yaml")
        try (good + "  - {provider: cloud, name: other, auth_type: token, file: \(h.directory.file("missing-secret.yaml"))}\n")
            .write(toFile: secretive, atomically: true, encoding: .utf8)
        result = try await h.cli(["machines", "list", "--config", secretive], runtimeDir: false)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty)

        // The runtime directory itself wrong: a usage error.
        let wrong = h.directory.file("wrong.yaml")
        try good.replacingOccurrences(of: "runtime_directory: run", with: "runtime_directory: \"\"").write(toFile: wrong, atomically: true, encoding: .utf8)
        result = try await h.cli(["status", "--config", wrong], runtimeDir: false)
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("instancepoller: \(wrong):") && result.stderr.hasSuffix("runtime_directory: the path is empty\n"), "\(result.stderr)")
        #expect(try await h.stop(controller) == 0)
    }

    @Test func aSecondControllerOnTheSameRuntimeDirectorySaysSoInOneLine() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let first = try await Self.start(h)
        // Not readable by others, so that it holds its inline credential
        // without a warning: the refusal is all there is to say.
        chmod(h.configPath, 0o600)
        let second = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), ["run", "--config", h.configPath])
        #expect(try await second.waitForExit() == 1)
        let output = try await second.output()
        #expect(output.stderr == "instancepoller: runtime directory \(h.runtimeDirectory) is in use by another controller (pid \(first.pid)); stop it, or give this one its own runtime_directory\n")
        #expect(try await h.stop(first) == 0)
    }

    @Test func aSocketNobodyAnswersOnIsSaidPlainly() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try FileManager.default.createDirectory(atPath: h.runtimeDirectory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let socket = "\(h.runtimeDirectory)/control.sock"
        SocketFiles.bindAndAbandon(socket)
        let result = try await h.cli(["status"])
        #expect(result.status == 1)
        #expect(result.stderr == "instancepoller: no controller answers on \(socket) (connection refused); start one with `instancepoller run --config FILE`\n")
    }

    @Test func helpNamesTheDirectoriesTheVariableAndTheExitCodes() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        func help(_ arguments: [String]) async throws -> String {
            let result = try await h.cli(arguments, runtimeDir: false)
            #expect(result.status == 0)
            // Lines wrap at the terminal's width: compare words.
            return result.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        }
        let top = try await help(["--help"])
        for phrase in [
            "$INSTANCEPOLLER_RUNTIME_DIR", "/run/instancepoller for root", "$XDG_RUNTIME_DIR/instancepoller", "/tmp/instancepoller-UID",
            "/var/lib/instancepoller for root", "$XDG_STATE_HOME/instancepoller", "~/.local/state/instancepoller",
            "Exit status: 0 success; 1 failure; 2 usage error", "141 when the output's reader went away",
        ] {
            #expect(top.contains(phrase), "instancepoller --help: \(phrase)")
        }
        for command in [["status"], ["machines", "list"], ["watch"]] {
            let text = try await help(command + ["--help"])
            for phrase in ["$INSTANCEPOLLER_RUNTIME_DIR", "/run/instancepoller for root", "/tmp/instancepoller-UID"] {
                #expect(text.contains(phrase), "\(command) --help: \(phrase)")
            }
        }
    }
}
