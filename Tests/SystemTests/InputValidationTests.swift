import Controller
import Support
import ControlAPI
import Core
import Foundation
import Testing
import TestSupport

/// What `machines add` takes: instance ids are checked like machine ids
/// (printable, no spaces or control characters, a stated length limit),
/// and a long value is never echoed whole.
@Suite("CLI input validation")
struct InputValidationTests {
    @Test func instanceIDsAndLongIDsAreRefusedInOneShortLine() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: try h.scenario("cloud", ControllerHarness.runningInstances([("i-1", "10.4.0.1")])))])
        let controller = try await h.start()
        func add(_ id: String, instance: String) async throws -> (status: Int32, stdout: String, stderr: String) {
            try await h.cli(["machines", "add", id, "--provider", "cloud", "--credential", "main", "--instance-id", instance])
        }

        var result = try await add("m1", instance: "i-1 with spaces")
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: instance_id: instance ids hold no spaces or control characters (got \"i-1 with spaces\")\n")
        result = try await add("m1", instance: "i-1\nm2  cloud  i-2  running")
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: instance_id: instance ids hold no spaces or control characters (got \"i-1\\nm2  cloud  i-2  running\")\n")
        result = try await add("m1", instance: String(repeating: "i", count: 100_000))
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: instance_id: instance ids are at most 256 characters (got 100000)\n")

        let longID = String(repeating: "x", count: 100_000)
        result = try await add(longID, instance: "i-1")
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: id: machine ids are at most 256 characters (got 100000)\n")
        result = try await add("bad id " + longID, instance: "i-1")
        #expect(result.status == 2)
        #expect(result.stderr.count < 300, "a long value is cut: \(result.stderr.count) characters")
        #expect(result.stderr.hasPrefix("instancepoller: id: machine ids are at most 256 characters"))
        // A good one still goes in.
        result = try await add("ok/id:1", instance: "i-1")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try await h.store.machines().map(\.id) == ["ok/id:1"], "nothing refused was added")
        #expect(try await h.stop(controller) == 0)
    }
}
