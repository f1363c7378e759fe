import Controller
import Support
import ControlAPI
import Core
import Foundation
import Testing
import TestSupport

/// What the processes of the system look like from the outside: no core
/// dumps and no tracing by their own uid (controller, shims, the CLI while
/// it holds a secret), shims of a root controller dropped to `shim.user`
/// with no capabilities, and no signal the controller ignores passed on.
@Suite("Process hardening: dumps, privileges, signals")
struct ProcessHardeningTests {
    static let nobody: UInt32 = 65534

    /// Runs `arguments` as uid/gid 65534 (nobody), another process of the
    /// same uid as the processes under test.
    static func asNobody(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let child = try await ChildProcess.spawn(
            "/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups"] + arguments, environment: ["PATH": "/usr/bin:/bin"]
        )
        child.closeStdin()
        let status = try await child.waitForExit()
        let output = try await child.output()
        return (status, output.stdout, output.stderr)
    }

    /// The `Name:` line of /proc/<pid>/status, without the name.
    static func status(_ field: String, of pid: Int32) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        return text.split(separator: "\n").first { $0.hasPrefix("\(field):") }
            .map { $0.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces) }
    }

    /// The "Max core file size" soft and hard limits of `pid`.
    static func coreLimit(of pid: Int32) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Max core file size") })
        else { return nil }
        return line.dropFirst("Max core file size".count).split(separator: " ").prefix(2).joined(separator: " ")
    }

    /// Gives everything under `path` to nobody.
    static func giveToNobody(_ path: String) {
        chown(path, nobody, nobody)
        for entry in (try? FileManager.default.subpathsOfDirectory(atPath: path)) ?? [] {
            lchown("\(path)/\(entry)", nobody, nobody)
        }
    }

    /// Another process of the same uid cannot read the process's memory
    /// map or environment (ptrace access), and it dumps no core: checked on
    /// a controller run as nobody, its shim, and `credentials set` while it
    /// reads a secret file (a FIFO: the test's open returns once the CLI has
    /// opened it, after its hardening, and the CLI waits for the secret).
    @Test func theControllerItsShimsAndTheCLIAreNotDumpable() async throws {
        try #require(getuid() == 0, "switching to another uid needs root (CI runs as root)")
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        let fifo = h.directory.file("secret.fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        Self.giveToNobody(h.directory.path)
        let controller = try await h.start(launcher: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        let shim = try #require(try await h.waitForShims(controller, count: 1).first)
        #expect(Self.status("Uid", of: controller.pid)?.hasPrefix("65534") == true)

        // The CLI has opened the secret file (after hardening itself) and
        // waits for the secret while the test looks at it.
        let cli = try await ChildProcess.spawn("/usr/bin/setpriv", [
            "--reuid=65534", "--regid=65534", "--clear-groups", BuiltProducts.path(of: "instancepoller"),
            "credentials", "set", "cloud", "fed", "--auth-type", "token", "--file", fifo, "--runtime-dir", h.runtimeDirectory,
        ])
        let secret = try await FIFO.openForWriting(fifo)
        for (what, pid) in [("the controller", controller.pid), ("its shim", shim), ("the CLI", cli.pid)] {
            let environ = try await Self.asNobody(["/bin/cat", "/proc/\(pid)/environ"])
            #expect(environ.status != 0 && environ.stderr.contains("Permission denied"), "\(what): another nobody process read /proc/\(pid)/environ")
            let memory = try await Self.asNobody(["/usr/bin/perl", "-e", "open(my $f, '<', '/proc/\(pid)/mem') or die \"$!\\n\"; print \"opened\\n\""])
            #expect(memory.stdout.isEmpty && memory.stderr.contains("Permission denied"), "\(what): another nobody process opened /proc/\(pid)/mem: \(memory)")
            #expect(Self.coreLimit(of: pid) == "0 0", "\(what): core file size limit \(Self.coreLimit(of: pid) ?? "?")")
        }
        await FIFO.finish(secret, writing: "token: S3CRET-fifo-5d1e0a\n")
        #expect(try await cli.waitForExit() == 0, "\(cli.stderr)")
        #expect(try await cli.output().stdout == "credential cloud/fed set (attributes: token)\n")
        #expect(try await h.stop(controller) == 0)
    }

    /// A root controller starts a provider with `shim.user: nobody` as uid
    /// and gid 65534 with no supplementary group but its own, no
    /// capabilities in any set (bounding and ambient included) and
    /// no_new_privs; the shim listens in its own directory and is polled
    /// as usual.
    @Test func aRootControllerStartsShimsAsTheirUserWithNoPrivileges() async throws {
        try #require(getuid() == 0, "dropping privileges needs a root controller (CI runs as root)")
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        // The shim, as nobody, reads its scenario through the test's directory.
        chmod(h.directory.path, 0o711)
        chmod(scenario, 0o644)
        try h.writeConfig(providers: ["""
              cloud:
                shim:
                  command: \(BuiltProducts.path(of: "provider-shim"))
                  args: [fake, --scenario, \(scenario)]
                  user: nobody
                cloud:
                  type: fake
              other:
                shim:
                  command: \(BuiltProducts.path(of: "provider-shim"))
                  args: [fake, --scenario, \(scenario)]
                cloud:
                  type: fake
            """])
        let controller = try await h.start()
        let started = try await controller.stderrLines.waitForLine("the nobody shim to start") {
            $0.contains("shim started") && $0.contains("provider=cloud")
        }
        let shim = try #require(logValue("pid", in: started.line).flatMap(Int32.init))
        #expect(Self.status("Uid", of: shim) == "65534\t65534\t65534\t65534")
        #expect(Self.status("Gid", of: shim) == "65534\t65534\t65534\t65534")
        #expect(Self.status("Groups", of: shim) == "65534")
        #expect(Self.status("NoNewPrivs", of: shim) == "1")
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            #expect(Self.status(set, of: shim) == "0000000000000000", "\(set) of the nobody shim")
        }
        // Its own directory, which only it can enter; the runtime directory
        // lets it pass through, and nothing more.
        let socket = try #require(ProcessTree.environment(of: shim).first { $0.hasPrefix("INSTANCEPOLLER_SOCKET=") }?.split(separator: "=", maxSplits: 1).last.map(String.init))
        #expect(socket.hasPrefix("\(h.runtimeDirectory)/shims/cloud/"), "\(socket)")
        var info = stat()
        #expect(stat("\(h.runtimeDirectory)/shims/cloud", &info) == 0 && info.st_uid == Self.nobody && info.st_mode & 0o777 == 0o700)
        #expect(stat(socket, &info) == 0 && info.st_uid == Self.nobody && info.st_mode & 0o777 == 0o600)
        #expect(try SocketFiles.mode(h.runtimeDirectory) == 0o711)
        #expect(try SocketFiles.mode("\(h.runtimeDirectory)/shims") == 0o711)
        // A provider without shim.user: its shim stays root, with a warning.
        try await controller.stderrLines.waitForLine("the warning for the root shim") {
            $0.contains("warning") && $0.contains("set shim.user") && $0.contains("provider=other")
        }
        #expect(!controller.stderrLines.lines.contains { $0.contains("set shim.user") && $0.contains("provider=cloud") })

        try await h.add("m1", provider: "cloud", instance: "i-1")
        try await h.waitForMachines("m1 to converge through the nobody shim") {
            $0["m1"]?.addressValues == ["10.3.0.1"] && $0["m1"]?.instanceStatus.state == .running
        }
        #expect(try await h.stop(controller) == 0)
    }

    /// A controller that is not root refuses, in one line, a shim.user it
    /// cannot become.
    @Test func aControllerThatIsNotRootRefusesAnotherShimUser() async throws {
        try #require(getuid() == 0, "switching to another uid needs root (CI runs as root)")
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: ["""
              cloud:
                shim:
                  command: \(BuiltProducts.path(of: "provider-shim"))
                  args: [fake, --scenario, none.yaml]
                  user: root
                cloud:
                  type: fake
            """])
        Self.giveToNobody(h.directory.path)
        let run = try await Self.asNobody([BuiltProducts.path(of: "instancepoller"), "run", "--config", h.configPath])
        #expect(run.status == 2)
        #expect(run.stderr.hasPrefix("instancepoller: \(h.configPath):") && run.stderr.split(separator: "\n").count == 1, "\(run.stderr)")
        #expect(run.stderr.contains(": providers.cloud.shim.user: the controller runs as uid 65534, not root, so it cannot start a shim as root (uid 0) gid 0; leave shim.user out or run the controller as root\n"), "\(run.stderr)")
    }

    /// Signals the controller ignores (or handles) start as default in its
    /// shims: the controller is started with SIGINT, SIGQUIT and SIGUSR1
    /// ignored; neither the process it starts (a shell here, which keeps
    /// ignored signals ignored and reports them) nor the shim under it
    /// ignores any of them.
    @Test func shimsDoNotInheritIgnoredSignals() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        try h.writeConfig(providers: ["""
              cloud:
                shim:
                  command: /bin/sh
                  args: [-c, '"$0" fake --scenario "$1"; exit $?', \(BuiltProducts.path(of: "provider-shim")), \(scenario)]
                cloud:
                  type: fake
            """])
        let controller = try await h.start(launcher: ["/bin/sh", "-c", "trap '' INT QUIT USR1; exec \"$@\"", "sh"])
        let ignoredByController = try #require(Self.status("SigIgn", of: controller.pid).flatMap { UInt64($0, radix: 16) })
        for signal in [SIGQUIT, SIGUSR1] {
            #expect(ignoredByController & (1 << UInt64(signal - 1)) != 0, "the controller ignores signal \(signal)")
        }
        let wrapper = try #require(try await h.waitForShims(controller, count: 1).first)
        let shim = try #require(ProcessTree.children(of: wrapper).first)
        for (what, pid, signals) in [("the shim's shell", wrapper, [SIGINT, SIGQUIT, SIGUSR1]), ("the shim", shim, [SIGQUIT, SIGUSR1])] {
            let ignored = try #require(Self.status("SigIgn", of: pid).flatMap { UInt64($0, radix: 16) })
            for signal in signals {
                #expect(ignored & (1 << UInt64(signal - 1)) == 0, "\(what) ignores signal \(signal)")
            }
        }
        #expect(try await h.stop(controller) == 0)
    }
}
