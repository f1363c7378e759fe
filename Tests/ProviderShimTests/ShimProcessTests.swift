import Controller
import Support
import ControlAPI
import Core
import Foundation
import ProviderShim
import SwiftProtobuf
import Testing
import TestSupport
import FakeProvider

/// The shim process contract with the real `provider-shim fake` binary.
@Suite("provider-shim process contract")
struct ShimProcessTests {
    static let binary = BuiltProducts.path(of: "provider-shim")
    static let example = BuiltProducts.repositoryRoot + "/scripts/scenarios/example.yaml"

    /// A started shim: its process, socket and a connected client.
    struct Shim {
        let process: ChildProcess
        let socketPath: String
        let client: ProviderClient
    }

    static func start(
        _ directory: TemporaryDirectory,
        scenario: String = example,
        extraArguments: [String] = []
    ) async throws -> Shim {
        let socketPath = directory.file("shim.sock")
        // A scrubbed environment, as the controller gives it.
        let process = try await ChildProcess.spawn(
            binary, ["fake", "--scenario", scenario] + extraArguments,
            environment: ["INSTANCEPOLLER_SOCKET": socketPath]
        )
        let line = try await process.nextLine(.seconds(30))
        #expect(line == "instancepoller-shim|1|unix|\(socketPath)|ttrpc")
        let client = try await ProviderClient.connect(socketPath: socketPath, logger: LogCapture().logger())
        return Shim(process: process, socketPath: socketPath, client: client)
    }


    @Test func handshakeLineSocketModeAndNothingElseOnStdout() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let shim = try await Self.start(directory)
        #expect(try SocketFiles.mode(shim.socketPath) == 0o600)
        #expect(try await shim.client.handshake(controllerVersion: "test", timeout: .seconds(5)).shimName == "fake")
        shim.process.closeStdin()
        #expect(try await shim.process.waitForExit(.seconds(5)) == 0)
        #expect(try await shim.process.output().stdout == "instancepoller-shim|1|unix|\(shim.socketPath)|ttrpc\n")
        #expect(shim.process.stderr.contains("serving"))  // logs go to stderr
    }

    @Test func exitsWithinOneSecondOfStdinEOF() async throws {
        let measured = try await measureWallClockContract(within: .seconds(1)) {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let shim = try await Self.start(directory)
            let closed = ContinuousClock.now
            shim.process.closeStdin()
            #expect(try await shim.process.waitForExit(.seconds(5)) == 0)
            let took = ContinuousClock.now - closed
            #expect(!FileManager.default.fileExists(atPath: shim.socketPath))
            return took
        }
        #expect(measured.last! < .seconds(1), "exit after stdin EOF took \(measured)")
    }

    @Test func sigtermFinishesTheCallInFlightThenExitsZero() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let shim = try await Self.start(directory)
        _ = try await shim.client.connection.call(FakeCloudControl.injectFault, .with {
            $0.fault = .with { $0.kind = .latency; $0.methods = ["Health"]; $0.delayNano = Duration.milliseconds(600).totalNanoseconds }
        })
        let slowCall = Task { try await shim.client.health(timeout: .seconds(10)) }
        // Wait until the shim has the call (it is recorded before the delay).
        try await withTimeout(.seconds(10), "the Health call to reach the shim") {
            while try await shim.client.connection.call(FakeCloudControl.getCalls, .init()).counts.first(where: { $0.method == "Health" }) == nil {
                await Task.yield()
            }
        }
        shim.process.terminate()
        #expect(try await slowCall.value.status == .serving)
        #expect(try await shim.process.waitForExit(.seconds(10)) == 0)
        #expect(!FileManager.default.fileExists(atPath: shim.socketPath))
    }

    @Test func shutdownCallExitsZero() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let shim = try await Self.start(directory)
        try await shim.client.shutdown(drainTimeout: .seconds(1), timeout: .seconds(5))
        #expect(try await shim.process.waitForExit(.seconds(10)) == 0)
        #expect(!FileManager.default.fileExists(atPath: shim.socketPath))
    }

    @Test func aStaleSocketIsReplaced() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        SocketFiles.bindAndAbandon(directory.file("shim.sock"))
        let shim = try await Self.start(directory)
        #expect(try await shim.client.health(timeout: .seconds(5)).status == .serving)
        shim.process.closeStdin()
        try await shim.process.waitForExit(.seconds(5))
    }

    @Test func withoutTheSocketVariableItSaysSoAndExitsTwo() async throws {
        let process = try await ChildProcess.spawn(Self.binary, ["fake", "--scenario", Self.example], environment: [:])
        #expect(try await process.waitForExit(.seconds(30)) == 2)
        let output = try await process.output()
        let lines = output.stderr.split(separator: "\n")
        #expect(lines.count == 1)
        #expect(lines.first?.contains("INSTANCEPOLLER_SOCKET is not set") == true)
        #expect(output.stdout.isEmpty)
    }

    @Test func aBadScenarioIsOneLineNamingFileLineAndPlaceWithExitTwo() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("bad.yaml")
        try "instances:\n  - id: i-1\n    timeline:\n      - at: 0s\n        state: runing\n".write(toFile: path, atomically: true, encoding: .utf8)
        let process = try await ChildProcess.spawn(Self.binary, ["fake", "--scenario", path], environment: ["INSTANCEPOLLER_SOCKET": directory.file("s.sock")])
        #expect(try await process.waitForExit(.seconds(30)) == 2)
        #expect(try await process.output().stderr == "provider-shim fake: \(path):5:16: instances[0].timeline[0].state: unknown value \"runing\" "
            + "(expected one of: allocating, provisioning, running, provisioning-error, stopped, terminated, unknown, unspecified)\n")
    }

    @Test func crashFaultExitsAfterNCalls() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let scenario = directory.file("crash.yaml")
        try "faults:\n  - kind: crash\n    methods: [Health]\n    after_calls: 2\n".write(toFile: scenario, atomically: true, encoding: .utf8)
        let shim = try await Self.start(directory, scenario: scenario)
        _ = try await shim.client.health(timeout: .seconds(5))
        _ = try await shim.client.health(timeout: .seconds(5))
        let error = await rpcError { _ = try await shim.client.health(timeout: .seconds(5)) }
        #expect(error?.code == .unavailable)
        #expect(try await shim.process.waitForExit(.seconds(5)) == 3)
    }

    @Test func hangFaultNeverAnswersAndStdinEOFStillEndsIt() async throws {
        let measured = try await measureWallClockContract(within: .seconds(1)) {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let scenario = directory.file("hang.yaml")
            try "faults:\n  - kind: hang\n    methods: [Instances]\n".write(toFile: scenario, atomically: true, encoding: .utf8)
            let shim = try await Self.start(directory, scenario: scenario)
            let start = ContinuousClock.now
            let error = await rpcError {
                _ = try await shim.client.instances(cloud: .init(), credential: .init(), ids: ["i-1"], timeout: .milliseconds(300))
            }
            #expect(error?.code == .deadlineExceeded)
            #expect(ContinuousClock.now - start < .seconds(5))
            let closed = ContinuousClock.now
            shim.process.closeStdin()
            #expect(try await shim.process.waitForExit(.seconds(5)) == 0)
            return ContinuousClock.now - closed
        }
        #expect(measured.last! < .seconds(1), "exit after stdin EOF, a call hanging, took \(measured)")
    }

    @Test func parentDeathEndsTheShimEvenWithStdinOpen() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let socketPath = directory.file("shim.sock")
        // sh is the shim's parent; this test holds the shim's stdin open,
        // so only the parent-death signal can end it when sh is killed.
        let parent = try await ChildProcess.spawn(
            // (sh gives a background job /dev/null as stdin unless it is redirected
            // from a duplicate of its own.)
            "/bin/sh", ["-c", "exec 3<&0; \"$0\" fake --scenario \"$1\" <&3 3<&- & echo \"pid $!\"; wait", Self.binary, Self.example],
            environment: ["INSTANCEPOLLER_SOCKET": socketPath]
        )
        var shimPID: Int32?
        var sawHandshake = false
        while shimPID == nil || !sawHandshake {
            guard let line = try await parent.nextLine(.seconds(30)) else { break }
            if line.hasPrefix("pid ") { shimPID = Int32(line.dropFirst(4)) }
            if line.hasPrefix("instancepoller-shim|1|unix|") { sawHandshake = true }
        }
        let pid = try #require(shimPID)
        #expect(sawHandshake)
        parent.kill()
        // Without the parent-death signal it would never end (its stdin
        // stays open); the bound only keeps a loaded machine from failing it.
        let ended = await ProcessWatch.waitForExit(pid: pid, limit: .seconds(10))
        // (What the shim said, and the state it is in, if it did not end.)
        #expect(ended, "shim \(pid) outlived its parent; state: \(ProcessTree.status(of: pid)); its stderr: \(parent.stderr)")
        // Gone gracefully: a default SIGTERM death would leave the socket.
        #expect(!FileManager.default.fileExists(atPath: socketPath))
    }

    @Test func manualClockFlagDrivesTheTimeline() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let shim = try await Self.start(directory, extraArguments: ["--manual-clock"])
        let credential = ProviderV1.Credential.with { $0.attributes = ["access-key": "AKIAFAKEEXAMPLE", "secret-key": "fake-secret-key"] }
        #expect(try await shim.client.instances(cloud: .init(), credential: credential, ids: ["i-late-1"], timeout: .seconds(5))[0].found == false)
        _ = try await shim.client.connection.call(FakeCloudControl.advanceClock, .with { $0.byNano = Duration.seconds(30).totalNanoseconds })
        let late = try await shim.client.instances(cloud: .init(), credential: credential, ids: ["i-late-1"], timeout: .seconds(5))
        #expect(late[0].status.state == .provisioningError)
        shim.process.closeStdin()
        try await shim.process.waitForExit(.seconds(5))
    }
}

