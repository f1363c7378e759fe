import Controller
import Support
import Core
import Foundation
import Logging
import ProviderShim
import SwiftProtobuf
import Testing
import TestSupport
import ControlAPI
import FakeProvider

/// A credential's life through the real CLI and controller: set (an expiry
/// in the past is refused unless allowed), used by machines (an unknown one
/// is refused), found invalid and valid again, removed (refused while used,
/// unless forced), and never in the way of a swap or a reload while no
/// machine uses it. One controller at a time.
@Suite("Credential lifecycle", .serialized)
struct CredentialLifecycleTests {
    /// The whole events log, as `watch --format jsonl` prints it.
    static func events(_ h: ControllerHarness) async throws -> [[String: Any]] {
        let result = try await h.cli(["watch", "--after", "0", "--no-follow", "--format", "jsonl"])
        return try result.stdout.split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        }
    }

    /// A fake cloud that knows only credential main (token letmein), with
    /// running instances c-1 and c-2.
    static func scenario(_ h: ControllerHarness, _ name: String, address: String = "10.5.0.1", extra: String = "") throws -> String {
        try h.scenario(name, ControllerHarness.runningInstances([("c-1", address), ("c-2", "10.5.1.2")], extra: """
            credentials:
              - name: main
                attributes: {token: letmein}
            \(extra)
            """))
    }

    /// `credentials set PROVIDER NAME --auth-type token --file -` with `token`.
    static func set(_ h: ControllerHarness, _ provider: String, _ name: String, token: String, _ more: [String] = []) async throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        try await h.cli(["credentials", "set", provider, name, "--auth-type", "token", "--file", "-"] + more, stdin: "token: \(token)\n")
    }

    @Test func removeIsRefusedWhileMachinesUseItAndForcedPausesThem() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: try Self.scenario(h, "remove"))])
        let controller = try await h.start()
        #expect(try await h.cli(["machines", "add", "m1", "--provider", "cloud", "--credential", "main", "--instance-id", "c-1"]).status == 0)
        #expect(try await h.cli(["machines", "add", "m2", "--provider", "cloud", "--credential", "main", "--instance-id", "c-2"]).status == 0)
        try await h.waitForMachines("both machines to be polled") { $0["m1"]?.addressValues == ["10.5.0.1"] && $0["m2"]?.addressValues == ["10.5.1.2"] }

        var result = try await h.cli(["credentials", "remove", "cloud", "main"])
        #expect(result.status == 1)
        #expect(result.stderr == "instancepoller: credential cloud/main is used by 2 machines; remove them first or pass --force\n")
        #expect(try await h.store.credential(provider: "cloud", name: "main") != nil, "refused: nothing removed")
        result = try await h.cli(["credentials", "remove", "cloud", "nope"])
        #expect(result.status == 1)
        #expect(result.stderr == "instancepoller: no credential cloud/nope\n")
        result = try await h.cli(["credentials", "remove", "cloud", "bad\"name"])
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("instancepoller: name: credential names are 1 to 256 letters"), "\(result.stderr)")

        // An unused one goes at once.
        #expect(try await Self.set(h, "cloud", "spare", token: "other").status == 0)
        result = try await h.cli(["credentials", "remove", "cloud", "spare"])
        #expect(result.status == 0)
        #expect(result.stdout == "credential cloud/spare removed\n")

        result = try await h.cli(["credentials", "remove", "cloud", "main", "--force", "--format", "json"])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")
        #expect(json["provider"] as? String == "cloud" && json["name"] as? String == "main" && json["machines"] as? Int == 2)

        // The machines stay, are not polled, and say why.
        let paused = try await h.waitForMachines("the machines to say their credential is gone") { machines in
            ["m1", "m2"].allSatisfy { machines[$0]?.pollError == "credential invalid: credential cloud/main does not exist" }
        }
        #expect(paused["m1"]?.addressValues == ["10.5.0.1"], "its polled truth stays")
        result = try await h.cli(["credentials", "list"])
        #expect(!result.stdout.contains("main"))
        #expect(try await Self.events(h).contains {
            $0["kind"] as? String == "credential-removed" && $0["source"] as? String == "external" && $0["credential"] as? String == "cloud/main"
                && $0["new_value"] as? String == "2 machines"
        })
        #expect(controller.exitStatusIfExited == nil, "the controller stays up")

        // Set again: polled again at once.
        #expect(try await Self.set(h, "cloud", "main", token: "letmein").status == 0)
        try await h.waitForMachines("the machines to be polled again") { machines in
            ["m1", "m2"].allSatisfy { machines[$0]?.pollError == nil }
        }
        #expect(try await h.stop(controller) == 0)
    }

    @Test func aValidationWhileTheShimIsDownIsAFailureWorthRetrying() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: [ControllerHarness.failingProvider("broken", problem: "cloud SDK exploded", status: 7)])
        let controller = try await h.start()
        #expect(try await Self.set(h, "broken", "main", token: "letmein").status == 0)

        let result = try await h.cli(["credentials", "validate", "broken", "main"])
        #expect(result.status == 1)
        #expect(result.stdout.isEmpty)
        // One line: the shim's state, then that it is Unavailable and worth a retry.
        #expect(result.stderr.hasPrefix("instancepoller: provider broken: "), "\(result.stderr)")
        #expect(result.stderr.hasSuffix(" (Unavailable: try again later)\n"), "\(result.stderr)")
        #expect(result.stderr.filter { $0 == "\n" }.count == 1, "\(result.stderr)")
        #expect(try await h.stop(controller) == 0)
    }

    @Test func machinesAddAndImportRefuseACredentialTheProviderDoesNotHave() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: try Self.scenario(h, "unknown"))])
        let controller = try await h.start()

        var result = try await h.cli(["machines", "add", "m1", "--provider", "cloud", "--credential", "ops", "--instance-id", "c-1"])
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: credential: no credential \"ops\" for provider \"cloud\" (known: main)\n")

        let file = h.directory.file("fleet.jsonl")
        try """
            {"id": "m1", "provider": "cloud", "credential": "main", "instance_id": "c-1"}
            {"id": "m2", "provider": "cloud", "credential": "ops", "instance_id": "c-2"}

            """.write(toFile: file, atomically: true, encoding: .utf8)
        result = try await h.cli(["machines", "import", file])
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("instancepoller: \(file):2: credential: no credential \"ops\" for provider \"cloud\" (known: main)\n"), "\(result.stderr)")
        #expect(try await h.store.machines().isEmpty, "nothing imported")

        #expect(try await Self.set(h, "cloud", "ops", token: "letmein").status == 0)
        result = try await h.cli(["machines", "import", file])
        #expect(result.status == 0, "\(result.stderr)")
        result = try await h.cli(["machines", "add", "m3", "--provider", "cloud", "--credential", "nope", "--instance-id", "c-1"])
        #expect(result.stderr == "instancepoller: credential: no credential \"nope\" for provider \"cloud\" (known: main, ops)\n")
        #expect(try await h.stop(controller) == 0)
    }

    @Test func anExpiryInThePastIsRefusedUnlessAllowedAndPrintsAsRFC3339() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: try Self.scenario(h, "expiry"))])
        let controller = try await h.start()

        var result = try await Self.set(h, "cloud", "old", token: "letmein", ["--expires", "2020-01-01T00:00:00Z"])
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: --expires: 2020-01-01T00:00:00Z is in the past; pass --allow-expired to set it anyway\n")

        // The controller refuses it too, whoever asks.
        let client = try await RPCClient.connect(
            unixSocketPath: "\(h.runtimeDirectory)/control.sock", logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        var request = Instancepoller_Control_V1_SetCredentialRequest()
        request.provider = "cloud"
        request.name = "old"
        request.authType = "token"
        request.attributes = ["token": "letmein"]
        request.expiresUnixNano = 1_577_836_800_000_000_000
        var refusal: RPCError?
        do {
            _ = try await client.call(ControlV1.setCredential, request, timeout: .seconds(10))
        } catch {
            refusal = RPCError(from: error)
        }
        await client.close()
        #expect(refusal?.code == .invalidArgument)
        #expect(refusal?.message == "expires_unix_nano: 2020-01-01T00:00:00Z is in the past; set allow_expired to set it anyway")
        #expect(try await h.store.credential(provider: "cloud", name: "old") == nil)

        result = try await Self.set(h, "cloud", "old", token: "letmein", ["--expires", "2020-01-01T00:00:00Z", "--allow-expired"])
        #expect(result.status == 0, "\(result.stderr)")
        result = try await h.cli(["credentials", "list"])
        #expect(result.stdout.contains("2020-01-01T00:00:00Z"), "\(result.stdout)")
        #expect(try await h.cli(["machines", "add", "m1", "--provider", "cloud", "--credential", "old", "--instance-id", "c-1"]).status == 0)
        try await h.waitForMachines("the gate to refuse the expired credential") {
            $0["m1"]?.pollError == "credential invalid: expired at 2020-01-01T00:00:00Z"
        }
        #expect(try await h.stop(controller) == 0)
    }

    @Test func aCredentialNoMachineUsesBlocksNeitherASwapNorAReload() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: try Self.scenario(h, "a", address: "10.5.0.1"))])
        let controller = try await h.start()
        _ = try await h.waitForShims(controller, count: 1)
        // A pending agent keeps m1 in the short group: polled every 400 ms at most, through each swap.
        let add = ["machines", "add", "m1", "--provider", "cloud", "--credential", "main", "--instance-id", "c-1", "--agent-status", "pending"]
        #expect(try await h.cli(add).status == 0)
        try await h.waitForMachines("m1 on backend A") { $0["m1"]?.addressValues == ["10.5.0.1"] }
        // Two the cloud would refuse, used by no machine: one expired, one unknown to it.
        #expect(try await Self.set(h, "cloud", "exp", token: "old", ["--expires", "2020-01-01T00:00:00Z", "--allow-expired"]).status == 0)
        #expect(try await Self.set(h, "cloud", "stale", token: "unknown-to-the-cloud").status == 0)

        let b = try Self.scenario(h, "b", address: "10.5.0.2")
        let result = try await h.cli(["providers", "swap", "cloud", "--", BuiltProducts.path(of: "provider-shim"), "fake", "--scenario", b])
        #expect(result.status == 0, "\(result.stderr)")
        try await h.waitForMachines("m1 on backend B") { $0["m1"]?.addressValues == ["10.5.0.2"] }

        // A reload with a changed shim swaps too, and says so.
        var before = controller.stderrLines.lines.count
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: try Self.scenario(h, "c", address: "10.5.0.3"))])
        kill(controller.pid, SIGHUP)
        var reloaded = try await controller.stderrLines.waitForLine(containing: "config reloaded", from: before)
        #expect(logValue("changes", in: reloaded.line) == "1", "\(reloaded.line)")
        #expect(!reloaded.line.contains("in part"))
        #expect(controller.stderrLines.lines[before...].contains { $0.contains("provider cloud: shim swapped") })
        try await h.waitForMachines("m1 on backend C") { $0["m1"]?.addressValues == ["10.5.0.3"] }

        // A refused swap is not a reload that succeeded: the summary says which and why, counting only what changed.
        before = controller.stderrLines.lines.count
        let broken = ControllerHarness.failingProvider("cloud", problem: "bad build", status: 3)
        try h.writeConfig(providers: [broken])
        kill(controller.pid, SIGHUP)
        reloaded = try await controller.stderrLines.waitForLine(containing: "config reloaded", from: before)
        #expect(reloaded.line.contains("config reloaded in part; provider cloud: swap refused, the old shim keeps serving:"), "\(reloaded.line)")
        #expect(reloaded.line.contains("bad build"), "\(reloaded.line)")
        #expect(logValue("changes", in: reloaded.line) == "0", "\(reloaded.line)")
        #expect(logValue("refused", in: reloaded.line) == "1", "\(reloaded.line)")
        #expect(try await h.stop(controller) == 0)
    }

    @Test func anInvalidMarkClearsOnceTheCloudAcceptsTheCredentialAgain() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        // main fails auth for the first 60 s of the shim's manual clock.
        let scenario = try Self.scenario(h, "window", extra: """
            faults:
              - kind: auth-failure
                credential: main
                from: 0s
                until: 60s
                message: "AuthFailure: the auth service is down"
            """)
        let provider = """
              cloud:
                shim:
                  command: \(BuiltProducts.path(of: "provider-shim"))
                  args: [fake, --scenario, \(scenario), --manual-clock]
                cloud:
                  type: fake
            """
        try h.writeConfig(providers: [provider])
        let controller = try await h.start()
        _ = try await h.waitForShims(controller, count: 1)
        try await h.add("m1", provider: "cloud", instance: "c-1")
        try await h.add("m2", provider: "cloud", instance: "c-2")
        try await h.waitForMachines("the machines to be paused by the invalid credential") { machines in
            ["m1", "m2"].allSatisfy { machines[$0]?.pollError == "credential invalid: AuthFailure: the auth service is down" }
        }
        var result = try await h.cli(["credentials", "list"])
        #expect(result.stdout.contains("no: AuthFailure: the auth service is down"), "\(result.stdout)")
        result = try await h.cli(["credentials", "validate", "cloud", "main"])
        #expect(result.status == 1, "still inside the window")

        // The window ends.
        let cloud = try await RPCClient.connect(
            unixSocketPath: "\(h.runtimeDirectory)/cloud-1.sock", logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        _ = try await cloud.call(FakeCloudControl.advanceClock, .with { $0.byNano = Duration.seconds(60).totalNanoseconds }, timeout: .seconds(10))
        await cloud.close()

        let before = controller.stderrLines.lines.count
        result = try await h.cli(["credentials", "validate", "cloud", "main"])
        #expect(result.status == 0)
        #expect(result.stdout == "credential cloud/main is valid\n")
        result = try await h.cli(["credentials", "list"])
        #expect(result.stdout.split(separator: "\n").contains { $0.hasPrefix("cloud") && $0.contains("main") && $0.hasSuffix("yes") }, "\(result.stdout)")
        #expect(try await h.store.credential(provider: "cloud", name: "main")?.invalidReason == nil)
        let polled = try await h.waitForMachines("the paused machines to be polled again", .seconds(10)) { machines in
            ["m1", "m2"].allSatisfy { machines[$0]?.pollError == nil && machines[$0]?.addresses.isEmpty == false }
        }
        #expect(polled["m1"]?.addressValues == ["10.5.0.1"])
        let line = try await controller.stderrLines.waitForLine(containing: "credential valid again", from: before)
        #expect(line.line.contains(" level=info "), "\(line.line)")
        #expect(try await Self.events(h).contains {
            $0["kind"] as? String == "credential-validated" && $0["source"] as? String == "external" && $0["credential"] as? String == "cloud/main"
                && $0["old_value"] as? String == "AuthFailure: the auth service is down" && $0["new_value"] == nil
        })
        #expect(try await h.stop(controller) == 0)
    }
}
