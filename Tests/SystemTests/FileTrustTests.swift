import Controller
import ControlAPI
import Core
import Foundation
import Testing
import TestSupport
import Support

/// What a local adversary can do with the controller's files: another uid
/// (65534, nobody, through setpriv) plants directories, links and files
/// where a root controller will look, and the controller must refuse them
/// without touching anything that is not its own.
@Suite("Security: directories, store and config trusted by owner")
struct FileTrustTests {
    static let nobody: uid_t = 65534

    /// A test directory that nobody can pass through, with a shared,
    /// sticky, world-writable directory in it, as /tmp is.
    static func sharedTmp(_ directory: TemporaryDirectory) throws -> String {
        #expect(chmod(directory.path, 0o711) == 0)
        let shared = directory.file("tmp")
        #expect(mkdir(shared, 0o1777) == 0 && chmod(shared, 0o1777) == 0)
        return shared
    }

    /// Runs `script` (perl) as nobody with `arguments`.
    static func asNobody(_ script: String, _ arguments: [String]) async throws -> ChildProcess {
        try await ChildProcess.spawn(
            "/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/perl", "-e", script] + arguments,
            environment: ["PATH": "/usr/bin:/bin"]
        )
    }

    /// Opens `path` as the controller's runtime directory again and again
    /// (removing it after each success, so the race starts over), on a
    /// thread of its own that yields after each attempt: at least `attempts` times, and on until the race
    /// has gone both ways (an open and a refusal), within `limit`. Returns
    /// how many opens succeeded, how many were refused as nobody's, and any
    /// other problem.
    static func openRepeatedly(_ path: String, attempts: Int, within limit: Duration) async -> (Int, Int, [String]) {
        await withCheckedContinuation { (continuation: CheckedContinuation<(Int, Int, [String]), Never>) in
            DetachedThread.run {
                var opened = 0
                var refused = 0
                var problems: [String] = []
                let deadline = ContinuousClock.now + limit
                var attempt = 0
                while (attempt < attempts || opened == 0 || refused == 0) && ContinuousClock.now < deadline {
                    attempt += 1
                    // Whatever else of the suite is runnable goes first.
                    sched_yield()
                    do {
                        let runtime = try RuntimeDirectory(path: path, logger: LogCapture().logger())
                        opened += 1
                        runtime.close()
                        if rmdir(path) != 0 { problems.append("cannot remove our own directory: \(String(cString: strerror(errno)))") }
                    } catch {
                        if "\(error)".contains("belongs to uid 65534 (nobody)") {
                            refused += 1
                        } else if !"\(error)".contains("keeps vanishing") {
                            problems.append("\(error)")
                        }
                    }
                }
                continuation.resume(returning: (opened, refused, problems))
            }
        }
    }

    /// The race of the report: nobody flaps a directory of its own, holding
    /// `controller.lock -> victim`, in and out of the runtime path while a
    /// root controller opens it again and again. The victim is never
    /// touched; every refusal names nobody's directory.
    @Test func aDirectoryFlappedIntoTheRuntimePathNeverMakesTheControllerWriteThroughIt() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let shared = try Self.sharedTmp(directory)
        let victim = directory.file("victim")
        let precious = Data("precious root-owned content\n".utf8)
        #expect(FileManager.default.createFile(atPath: victim, contents: precious))
        let target = "\(shared)/instancepoller-0"
        let stop = "\(shared)/stop"
        // Both racers spin, the flapper at nice 10 and the opener yielding
        // after each attempt, so that the rest of the suite keeps running.
        let flapper = try await ChildProcess.spawn(
            "/usr/bin/nice",
            ["-n", "10", "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/perl", "-e",
             """
            $| = 1;
            my ($shared, $target, $victim, $stop) = @ARGV;
            my $mine = "$shared/attacker";
            mkdir($mine, 0700) or die "mkdir: $!";
            symlink($victim, "$mine/controller.lock") or die "symlink: $!";
            my ($swaps, $until) = (0, time + 20);
            print "ready\n";
            while (!-e $stop && time < $until) {
                if (rename($mine, $target)) { $swaps++; rename($target, $mine) or die "rename back: $!"; }
            }
            print "swaps $swaps\n";
            """, shared, target, victim, stop],
            environment: ["PATH": "/usr/bin:/bin"]
        )
        #expect(try await flapper.nextLine() == "ready")

        let (opened, refusedAsNobodys, otherProblems) = await Self.openRepeatedly(target, attempts: 500, within: .seconds(15))
        #expect(FileManager.default.createFile(atPath: stop, contents: nil))
        let flapperStatus = try await flapper.waitForExit()
        let flapperOutput = try await flapper.output()
        #expect(flapperStatus == 0, "\(flapperOutput.stderr)")
        let swaps = try #require(try await flapper.nextLine()).split(separator: " ").last.flatMap { Int($0) } ?? 0

        #expect(FileManager.default.contents(atPath: victim) == precious, "the victim was never written through the link")
        #expect(otherProblems.isEmpty, "\(otherProblems.prefix(3))")
        #expect(swaps > 0 && refusedAsNobodys > 0 && opened > 0, "the race ran both ways: \(swaps) swaps, \(refusedAsNobodys) refusals, \(opened) opens")
    }

    /// Merely pre-creating the path stops the controller, with a message
    /// that says whose it is; a symbolic link there is not followed.
    @Test func aPreCreatedRuntimeDirectoryIsRefusedNamingItsOwner() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        #expect(mkdir(h.runtimeDirectory, 0o700) == 0 && chown(h.runtimeDirectory, Self.nobody, Self.nobody) == 0)

        let refused = try await h.cli(["run", "--config", h.configPath], runtimeDir: false)
        #expect(refused.status == 1)
        let last = refused.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last == "instancepoller: runtime directory \(h.runtimeDirectory): directory belongs to uid 65534 (nobody), not to this user (uid 0); remove it, or choose another directory")

        #expect(rmdir(h.runtimeDirectory) == 0)
        let elsewhere = h.directory.file("elsewhere")
        #expect(mkdir(elsewhere, 0o700) == 0 && symlink(elsewhere, h.runtimeDirectory) == 0)
        let linked = try await h.cli(["run", "--config", h.configPath], runtimeDir: false)
        #expect(linked.status == 1)
        #expect(linked.stderr.contains("\(h.runtimeDirectory): is a symbolic link"), "\(linked.stderr)")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: elsewhere)) ?? ["?"]).isEmpty, "nothing made through the link")
    }

    /// nobody pre-creates the store, or its -wal or -shm, in a shared
    /// directory (0600, its own, held open to read what is written): the
    /// controller refuses the store, and nothing reaches nobody's files.
    @Test(arguments: ["", "-wal", "-shm"])
    func aStoreFileMadeBySomeoneElseIsRefused(suffix: String) async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let shared = try Self.sharedTmp(h.directory)
        let storePath = "\(shared)/store.db"
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        let config = try String(contentsOfFile: h.configPath, encoding: .utf8).replacingOccurrences(of: "store: store.db", with: "store: \(storePath)")
        try config.write(toFile: h.configPath, atomically: true, encoding: .utf8)
        let planter = try await Self.asNobody(
            "my ($p) = @ARGV; umask 077; open(my $f, '>', $p) or die \"$p: $!\"; close($f);",
            [storePath + suffix]
        )
        #expect(try await planter.waitForExit() == 0)

        let refused = try await h.cli(["run", "--config", h.configPath], runtimeDir: false)
        #expect(refused.status == 1)
        let last = refused.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last == "instancepoller: store \(storePath + suffix): belongs to uid 65534 (nobody), not to this user (uid 0); remove it", "\(refused.stderr)")
        var info = stat()
        #expect(stat(storePath + suffix, &info) == 0 && info.st_size == 0 && info.st_uid == Self.nobody, "nobody's file got nothing")
    }

    /// sshd's StrictModes for the config: it names the commands a root
    /// controller runs, so one others can write, or someone else's, is
    /// refused at start and at a reload (which keeps the old config).
    @Test func aConfigOthersCanWriteOrOwnIsRefused() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])

        #expect(chmod(h.configPath, 0o666) == 0)
        let writable = try await h.cli(["run", "--config", h.configPath], runtimeDir: false)
        #expect(writable.status == 2)
        #expect(writable.stderr == "instancepoller: \(h.configPath): the file has mode 0666: others can change the commands this controller runs; chmod go-w \(h.configPath)\n")

        #expect(chmod(h.configPath, 0o644) == 0 && chown(h.configPath, Self.nobody, Self.nobody) == 0)
        let foreign = try await h.cli(["run", "--config", h.configPath], runtimeDir: false)
        #expect(foreign.status == 2)
        #expect(foreign.stderr.contains("the file belongs to uid 65534 (nobody); it names the commands this controller runs, so it must be this user's or root's"), "\(foreign.stderr)")

        // Readable by others with inline secrets: a warning, and it runs.
        #expect(chown(h.configPath, 0, 0) == 0)
        let controller = try await h.start()
        let warning = try await controller.stderrLines.waitForLine(containing: "holds credential attributes and has mode 0644")
        #expect(warning.line.contains("warning"))

        // A reload of a config someone else could have changed is refused.
        let text = try String(contentsOfFile: h.configPath, encoding: .utf8)
        let other = try h.scenario("other", ControllerHarness.runningInstances([("i-1", "10.9.9.9")]))
        try text.replacingOccurrences(of: scenario, with: other).write(toFile: h.configPath, atomically: false, encoding: .utf8)
        #expect(chmod(h.configPath, 0o666) == 0)
        kill(controller.pid, SIGHUP)
        let notReloaded = try await controller.stderrLines.waitForLine(containing: "config not reloaded", from: warning.index)
        #expect(notReloaded.line.contains("mode 0666"))
        #expect(try await h.stop(controller) == 0)
        #expect(!controller.stderr.contains("swapped"), "nothing from the changed file was applied")
    }
}
