import Controller
import Support
import Core
import Foundation
import NIOCore
import Testing
import TestSupport
import ControlAPI

/// Who may reach the controller and its shims, and where secrets may go:
/// owner-only files and sockets, other users refused on both sockets by
/// the directory and by the peer check, and credentials that travel only
/// over the sockets — never into a log line at any level, a process's
/// argv or environment, the CLI's output, `watch`, or the metrics.
@Suite("Security: modes, peers and secrets")
struct SecurityTests {
    static let inlineSecret = "S3CRET-inline-7f2a91"
    static let fileSecret = "S3CRET-file-91bd44"
    static let cliSecret = "S3CRET-cli-c03e17"
    static let secrets = [inlineSecret, fileSecret, cliSecret]

    /// A request frame, hex-encoded for the client that runs as nobody.
    static func requestHex(service: String, method: String) throws -> String {
        let frame = try FrameEncoding.request(
            RequestEnvelope(service: service, method: method, payload: ByteBuffer()), streamID: 1, allocator: ByteBufferAllocator()
        )
        return frame.contiguous.readableBytesView.map { String(format: "%02x", $0) }.joined()
    }

    /// Connects to a Unix socket as uid/gid 65534 (nobody), sends one
    /// request and says what happened: `connect-failed: …`, `closed`,
    /// `reset`, `no-answer` or `answered N`. Perl, because every Debian has
    /// it where another user can run it.
    static func asNobody(connectTo path: String, send hex: String) async throws -> String {
        let script = """
            use Socket;
            my ($path, $hex) = @ARGV;
            socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
            if (!connect($s, pack_sockaddr_un($path))) { print "connect-failed: $!\\n"; exit 0; }
            # The peer check may close the connection before the write.
            $SIG{PIPE} = 'IGNORE';
            if (!defined syswrite($s, pack("H*", $hex))) { print $!{EPIPE} ? "closed\n" : $!{ECONNRESET} ? "reset\n" : "write-failed: $!\n"; exit 0; }
            local $SIG{ALRM} = sub { print "no-answer\\n"; exit 0; };
            alarm 5;
            my $n = sysread($s, my $buffer, 65536);
            if (!defined $n) { print $!{ECONNRESET} ? "reset\\n" : "read-failed: $!\\n"; }
            elsif ($n == 0) { print "closed\\n"; }
            else { print "answered $n\\n"; }
            """
        let child = try await ChildProcess.spawn(
            "/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/perl", "-e", script, path, hex],
            environment: ["PATH": "/usr/bin:/bin"]
        )
        let status = try await child.waitForExit()
        let output = try await child.output()
        #expect(status == 0, "the nobody client ran: \(output.stderr)")
        return output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func theRuntimeDirectorySocketsLockAndStoreAreOwnerOnly() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario), h.fakeProvider("other", scenario: scenario)])
        let controller = try await h.start()
        _ = try await h.waitForShims(controller, count: 2)
        try await h.add("m1", provider: "cloud", instance: "i-1")
        try await h.waitForMachines("m1 to converge") { $0["m1"]?.addressValues == ["10.3.0.1"] }

        #expect(try SocketFiles.mode(h.runtimeDirectory) == 0o700)
        let entries = h.runtimeEntries()
        #expect(entries.contains("control.sock") && entries.count(where: { $0.hasSuffix(".sock") }) == 3, "\(entries)")
        for entry in entries {
            let path = "\(h.runtimeDirectory)/\(entry)"
            #expect(try SocketFiles.mode(path) == 0o600, "\(entry) is 0600")
            var info = stat()
            #expect(stat(path, &info) == 0 && info.st_uid == getuid())
            if entry.hasSuffix(".sock") { #expect(info.st_mode & S_IFMT == S_IFSOCK, "\(entry) is a socket") }
        }
        for file in [h.storePath, h.storePath + "-wal", h.storePath + "-shm"] where FileManager.default.fileExists(atPath: file) {
            #expect(try SocketFiles.mode(file) == 0o600, "\(file) holds credentials: 0600")
        }
        #expect(try await h.stop(controller) == 0)
    }

    @Test func anotherUserIsRefusedOnBothSockets() async throws {
        try #require(getuid() == 0, "switching to another uid needs root (CI runs as root)")
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        let controller = try await h.start()
        _ = try await h.waitForShims(controller, count: 1)
        let control = "\(h.runtimeDirectory)/control.sock"
        let shim = "\(h.runtimeDirectory)/\(try #require(h.runtimeEntries().first { $0.hasPrefix("cloud-") }))"
        let probes = [
            (control, try Self.requestHex(service: ControlV1.serviceName, method: "Status")),
            (shim, try Self.requestHex(service: ProviderV1.serviceName, method: "Health")),
        ]

        // As set up: the 0700 directory stops another user before the socket.
        for (path, hex) in probes {
            #expect(try await Self.asNobody(connectTo: path, send: hex) == "connect-failed: Permission denied", "\(path)")
        }

        // An operator opens the directory and the sockets to everyone: the
        // peer check (SO_PEERCRED) still refuses the connection unanswered.
        let mark = controller.stderrLines.lines.count
        chmod(h.directory.path, 0o711)  // the test's own private directory
        chmod(h.runtimeDirectory, 0o711)
        for (path, _) in probes { chmod(path, 0o666) }
        for (path, hex) in probes {
            let outcome = try await Self.asNobody(connectTo: path, send: hex)
            #expect(outcome == "closed" || outcome == "reset", "\(path): \(outcome)")
        }
        let refusedByController = try await controller.stderrLines.waitForLine(from: mark, "the controller to log the refusal") {
            $0.contains("refused connection") && $0.contains("peer_uid=65534") && $0.contains("control.sock")
        }
        #expect(refusedByController.line.contains("warning"))
        try await controller.stderrLines.waitForLine(from: mark, "the shim's refusal, forwarded") {
            $0.contains("refused connection") && $0.contains("peer_uid=65534") && $0.contains("provider=cloud")
        }

        // The owner is still served, and polling went on.
        #expect(try await h.cli(["status"]).status == 0)
        try await h.add("m1", provider: "cloud", instance: "i-1")
        try await h.waitForMachines("m1 to converge") { $0["m1"]?.addressValues == ["10.3.0.1"] }
        #expect(try await h.stop(controller) == 0)
    }

    @Test func secretsTravelOnlyOverTheSockets() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        // The fake cloud accepts only the exact secrets: a machine that
        // converges proves they reached the shim (over its socket).
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1"), ("i-2", "10.3.0.2")], extra: """
            credentials:
              - name: main
                attributes: {token: \(Self.inlineSecret)}
              - name: filed
                attributes: {token: \(Self.fileSecret)}
              - name: rotated
                attributes: {token: \(Self.cliSecret)}

            """))
        let secretFile = h.directory.file("filed.yaml")
        FileManager.default.createFile(atPath: secretFile, contents: Data("token: \(Self.fileSecret)\n".utf8), attributes: [.posixPermissions: 0o600])
        let config = """
            store: store.db
            runtime_directory: run
            \(ControllerHarness.fastSettings)
            metrics:
              address: 127.0.0.1:0
            providers:
              cloud:
                shim:
                  command: \(BuiltProducts.path(of: "provider-shim"))
                  args: [fake, --scenario, \(scenario)]
                  env: [ALLOWED_VARIABLE]
                cloud:
                  type: fake
            credentials:
              - provider: cloud
                name: main
                auth_type: token
                attributes: {token: \(Self.inlineSecret)}
              - provider: cloud
                name: filed
                auth_type: token
                file: \(secretFile)

            """
        try config.write(toFile: h.configPath, atomically: true, encoding: .utf8)
        var environment = ProcessInfo.processInfo.environment
        environment["ALLOWED_VARIABLE"] = "passed-on"
        environment["NOT_ALLOWED_TOKEN"] = "kept-back"
        let controller = try await h.start(logLevel: "trace", environment: environment)
        let serving = try await controller.stderrLines.waitForLine(containing: "serving metrics")
        let port = try #require(logValue("address", in: serving.line)?.split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) })

        let watcher = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), ["watch", "--runtime-dir", h.runtimeDirectory])
        try await watcher.stderrLines.waitForLine(containing: "following events after revision")

        try await h.store.addMachine(Machine(id: "m1", provider: "cloud", credential: "main", instanceID: "i-1"))
        try await h.store.addMachine(Machine(id: "m2", provider: "cloud", credential: "filed", instanceID: "i-2"))
        try await h.waitForMachines("both machines to converge with their credentials") {
            $0["m1"]?.addressValues == ["10.3.0.1"] && $0["m2"]?.addressValues == ["10.3.0.2"]
        }
        var outputs: [String] = []
        let set = try await h.cli(["credentials", "set", "cloud", "rotated", "--auth-type", "token", "--file", "-"], stdin: "token: \(Self.cliSecret)\n")
        #expect(set.status == 0, "\(set.stderr)")
        outputs.append(set.stdout + set.stderr)
        for command in [
            ["credentials", "validate", "cloud", "rotated"], ["credentials", "list"], ["credentials", "list", "--format", "json"],
            ["machines", "show", "m1", "--format", "json"], ["machines", "list"], ["status", "--format", "json"], ["providers", "list"],
            ["watch", "--after", "0", "--no-follow", "--format", "json"],
        ] {
            let result = try await h.cli(command)
            #expect(result.status == 0, "\(command): \(result.stderr)")
            outputs.append(result.stdout + result.stderr)
        }
        try await h.store.addMachine(Machine(id: "m3", provider: "cloud", credential: "rotated", instanceID: "i-1"))
        try await h.waitForMachines("m3 to converge with the credential set through the CLI") { $0["m3"]?.addressValues == ["10.3.0.1"] }
        let metrics = try await HTTP.get(port: port, path: "/metrics")
        #expect(metrics.contains("instancepoller_credential_valid"))

        // Every process of the system, while it runs: the controller, its
        // shim and a CLI client (watch).
        let shims = ProcessTree.children(of: controller.pid)
        #expect(shims.count == 1)
        for pid in [controller.pid, watcher.pid] + shims {
            let argv = ProcessTree.commandLine(of: pid)
            let environ = ProcessTree.environment(of: pid)
            #expect(!argv.isEmpty && !environ.isEmpty, "/proc/\(pid) is readable")
            for secret in Self.secrets {
                #expect(!argv.contains(secret), "a secret is in /proc/\(pid)/cmdline")
                #expect(!environ.contains { $0.contains(secret) }, "a secret is in /proc/\(pid)/environ")
            }
        }
        // A shim gets its allowlist and its socket, nothing else.
        let shimEnvironment = ProcessTree.environment(of: shims[0]).sorted()
        #expect(shimEnvironment.count == 2 && shimEnvironment[0] == "ALLOWED_VARIABLE=passed-on"
            && shimEnvironment[1].hasPrefix("INSTANCEPOLLER_SOCKET=\(h.runtimeDirectory)/"), "\(shimEnvironment)")

        watcher.terminate()
        _ = try await watcher.waitForExit()
        let watched = try await watcher.output()
        #expect(watched.stdout.contains("m3"), "watch saw the events: \(watched.stdout)")
        #expect(try await h.stop(controller) == 0)
        let log = controller.stderr
        #expect(log.contains(" level=trace ") || log.contains(" level=debug "), "the controller logged at its most verbose")
        for secret in Self.secrets {
            #expect(!log.contains(secret), "a secret reached the controller's log (shim lines included)")
            #expect(!watched.stdout.contains(secret) && !watched.stderr.contains(secret), "a secret reached watch")
            #expect(!metrics.contains(secret), "a secret reached the metrics")
            for output in outputs { #expect(!output.contains(secret), "a secret reached the CLI's output") }
        }
    }

    /// A process of the same uid renames its own listening socket over a
    /// shim's socket path before the controller connects. The shim here is
    /// a wrapper that starts the real `provider-shim fake` and holds its
    /// handshake line back until the test has done that (a FIFO gate), so
    /// the impostor is in place every time. The controller must check who
    /// serves the socket before it sends a byte: the impostor gets nothing
    /// (no Handshake, no credential), the refusal names the provider, the
    /// socket, the shim's pid and the impostor's pid and uid, and the
    /// provider is served by a restarted real shim.
    @Test func aProcessThatIsNotTheShimNeverGetsAByteFromTheController() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        let gate = h.directory.file("gate")
        let firstStart = h.directory.file("first-start")
        #expect(mkfifo(gate, 0o600) == 0)
        let wrapper = h.directory.file("gated-shim.sh")
        try """
            # The real shim, its handshake line passed on only once the test
            # opens the gate: by the first start alone (the one that makes
            # the directory $3; mkdir is atomic), every later one at once.
            # Nothing the test does after the gate can race a restart.
            "$1" fake --scenario "$2" | {
                IFS= read -r line || exit 1
                if mkdir "$3" 2>/dev/null; then read go < "$4"; fi
                printf '%s\\n' "$line"
                exec cat
            }

            """.write(toFile: wrapper, atomically: true, encoding: .utf8)
        try h.writeConfig(providers: ["""
              cloud:
                shim:
                  command: /bin/sh
                  args: [\(wrapper), \(BuiltProducts.path(of: "provider-shim")), \(scenario), \(firstStart), \(gate)]
                cloud:
                  type: fake
            """], settings: ControllerHarness.fastSettings + "\n  startup_timeout: 120s")
        // The gate alone holds the first start back: a start timeout that a
        // loaded machine could use up before the test opens the gate would
        // start a new shim on a new socket, which the impostor never holds.
        let controller = try await h.start()
        // The real shim listens (it logs so, through the controller) while
        // its handshake line waits at the gate.
        let serving = try await controller.stderrLines.waitForLine("the gated shim to listen") {
            $0.contains(" msg=serving ") && $0.contains("provider=cloud")
        }
        let shimSocket = try #require(logValue("socket", in: serving.line))
        #expect(shimSocket.hasPrefix(h.runtimeDirectory + "/"))

        // The impostor: this test process, which the controller did not start.
        let impostor = try ListeningSocket(path: "\(h.runtimeDirectory)/impostor.sock")
        defer { impostor.close() }
        let renamed = rename(impostor.path, shimSocket) == 0 ? "renamed" : String(cString: strerror(errno))
        #expect(renamed == "renamed", "renaming the impostor's socket over the shim's")
        // Open the gate: the first start's handshake line goes on.
        try await FIFO.write("go\n", to: gate)

        // The controller connects to the impostor, and sends nothing.
        let received = try await impostor.acceptAndRead(within: .seconds(60))
        #expect(received.isEmpty, "the impostor received \(received.count) bytes from the controller")

        let refusal = try await controller.stderrLines.waitForLine("the refusal") {
            $0.contains("refused server") && $0.contains("provider=cloud")
        }
        #expect(refusal.line.contains("socket=\(shimSocket)"), "\(refusal.line)")
        #expect(refusal.line.contains("peer_pid=\(getpid())") && refusal.line.contains("peer_uid=\(getuid())"), "\(refusal.line)")
        let failed = try await controller.stderrLines.waitForLine("the failed start") {
            $0.contains("shim failed to start") && $0.contains("provider=cloud")
        }
        #expect(failed.line.contains("server at \(shimSocket) is pid \(getpid()) uid \(getuid()), not the shim (pid "), "\(failed.line)")

        // Supervision starts the shim again; this time the real one serves.
        let pids = try await h.waitForShims(controller, count: 1)
        try await h.add("m1", provider: "cloud", instance: "i-1")
        try await h.waitForMachines("m1 to converge through the real shim") { $0["m1"]?.addressValues == ["10.3.0.1"] }
        #expect(ProcessAncestry.isSelfOrDescendant(pids[0], of: controller.pid))
        #expect(impostor.pendingConnections() == 0, "the controller came back to the impostor")
        #expect(try await h.stop(controller) == 0)
    }
}

/// A listening Unix socket a test owns (an impostor's).
final class ListeningSocket: Sendable {
    let path: String
    let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path.utf8) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 8) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    /// Accepts one connection and reads until its first bytes or its end:
    /// what the peer sent before hanging up (empty if nothing).
    func acceptAndRead(within limit: Duration) async throws -> [UInt8] {
        let fd = self.fd
        return try await withTimeout(limit, "a connection to the impostor") {
            await withCheckedContinuation { continuation in
                Thread.detachNewThread {
                    let connection = accept(fd, nil, nil)
                    guard connection >= 0 else { return continuation.resume(returning: []) }
                    var buffer = [UInt8](repeating: 0, count: 65536)
                    var count = 0
                    repeat { count = read(connection, &buffer, buffer.count) } while count < 0 && errno == EINTR
                    Glibc.close(connection)
                    continuation.resume(returning: Array(buffer[0..<max(count, 0)]))
                }
            }
        }
    }

    /// Connections waiting to be accepted.
    func pendingConnections() -> Int {
        var count = 0
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        while true {
            let connection = accept(fd, nil, nil)
            guard connection >= 0 else { break }
            Glibc.close(connection)
            count += 1
        }
        _ = fcntl(fd, F_SETFL, flags)
        return count
    }

    func close() { Glibc.close(fd) }
}

/// Writing to a FIFO: opening it waits for its reader, an event.
enum FIFO {
    /// Opens `path` for writing: returns the descriptor once a reader has
    /// it open, or times out.
    static func openForWriting(_ path: String, within limit: Duration = .seconds(20)) async throws -> Int32 {
        try await withTimeout(limit, "a reader of \(path)") {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
                Thread.detachNewThread {
                    let fd = open(path, O_WRONLY | O_CLOEXEC)
                    guard fd >= 0 else { return continuation.resume(throwing: POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)) }
                    continuation.resume(returning: fd)
                }
            }
        }
    }

    /// Writes `text` on an open FIFO and closes it. A reader that is gone
    /// makes the write fail (EPIPE), never kills the test process: the write
    /// runs on a thread of its own with SIGPIPE blocked, and a SIGPIPE left
    /// pending for that thread ends with it.
    static func finish(_ fd: Int32, writing text: String) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                var pipeSignal = sigset_t()
                sigemptyset(&pipeSignal)
                sigaddset(&pipeSignal, SIGPIPE)
                pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
                let bytes = Array(text.utf8)
                _ = Glibc.write(fd, bytes, bytes.count)
                Glibc.close(fd)
                continuation.resume()
            }
        }
    }

    /// Opens `path` for writing once a reader has it, writes `text`, closes it.
    static func write(_ text: String, to path: String, within limit: Duration = .seconds(20)) async throws {
        await finish(try await openForWriting(path, within: limit), writing: text)
    }
}

extension SecurityTests {
    @Test func metricsWithABearerTokenAnswer401WithoutItAndNeverLogIt() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let token = "tok-\(UUID().uuidString)"
        let tokenFile = h.directory.file("metrics-token")
        FileManager.default.createFile(atPath: tokenFile, contents: Data("\(token)\n".utf8), attributes: [.posixPermissions: 0o600])
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.3.0.1")]))
        try h.writeConfig(
            providers: [h.fakeProvider("cloud", scenario: scenario)],
            settings: ControllerHarness.fastSettings + "\nmetrics:\n  address: 127.0.0.1:0\n  bearer_token_file: metrics-token"
        )
        let controller = try await h.start(logLevel: "trace")
        let serving = try await controller.stderrLines.waitForLine(containing: "serving metrics")
        #expect(logValue("bearer_token", in: serving.line) == "required")
        let url = try #require(logValue("address", in: serving.line))
        let port = try #require(url.split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) })

        let without = try await HTTP.get(port: port, path: "/metrics")
        #expect(without.hasPrefix("HTTP/1.1 401 Unauthorized"), "\(without.prefix(80))")
        #expect(without.contains("WWW-Authenticate: Bearer"))
        #expect(!without.contains("instancepoller_"))
        let wrong = try await HTTP.get(port: port, path: "/metrics", headers: ["Authorization: Bearer \(token.dropLast())"])
        #expect(wrong.hasPrefix("HTTP/1.1 401 Unauthorized"))
        let right = try await HTTP.get(port: port, path: "/metrics", headers: ["Authorization: Bearer \(token)"])
        #expect(right.hasPrefix("HTTP/1.1 200 OK"))
        #expect(right.contains("instancepoller_server_limit_hits_total{server=\"metrics\",limit=\"unauthorized\"} 2"))
        #expect(right.contains("instancepoller_server_connections{server=\"control\"}"))
        #expect(!right.contains(token))

        #expect(try await h.stop(controller) == 0)
        let lines = controller.stderrLines.lines
        #expect(lines.contains { $0.contains("refused a metrics request without the bearer token") })
        #expect(!lines.contains { $0.contains(token) }, "the token is never logged, at any level")
    }
}
