import Controller
import Core
import Foundation
import Testing
import TestSupport

/// A provider's own `poll:` block in the real controller: a metered account
/// polled in small calls while another provider, on the config's settings,
/// is polled in one call per sweep (README "Per-provider poll settings").
@Suite("Per-provider poll settings")
struct ProviderPollSettingsTests {
    @Test func aMeteredProviderIsPolledInItsOwnSmallCalls() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let ids = (1...6).map { (id: "i-\($0)", address: "10.0.0.\($0)") }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances(ids))
        func provider(_ name: String, poll: String) -> String {
            """
              \(name):
                shim:
                  command: \(BuiltProducts.path(of: "provider-shim"))
                  args: [fake, --scenario, \(scenario), --call-log, \(h.directory.file("\(name).calls"))]
                cloud:
                  type: fake
            \(poll)
            """
        }
        try h.writeConfig(providers: [
            provider("bulk", poll: ""),
            provider("metered", poll: "    poll: {max_ids_per_call: 2, short_poll: 300ms, short_poll_cap: 600ms}"),
        ])
        let controller = try await h.start()
        // One transaction, so that each provider's six machines come due together.
        let csv = h.directory.file("fleet.csv")
        var rows = ["id,provider,credential,instance_id,agent_status,manual"]
        for provider in ["bulk", "metered"] {
            for (index, entry) in ids.enumerated() { rows.append("\(provider)-\(index + 1),\(provider),main,\(entry.id),,") }
        }
        try (rows.joined(separator: "\n") + "\n").write(toFile: csv, atomically: true, encoding: .utf8)
        #expect(try await h.cli(["machines", "import", csv]).status == 0)
        try await h.waitForMachines("every machine to be polled", .seconds(30)) { machines in
            machines.count == 12 && machines.values.allSatisfy { $0.instanceStatus.state == .running && !$0.interfaces.isEmpty }
        }
        #expect(try await h.stop(controller) == 0)

        let bulk = try Self.instancesCalls(h.directory.file("bulk.calls"))
        let metered = try Self.instancesCalls(h.directory.file("metered.calls"))
        #expect(bulk.max() == 6, "the config's max_ids_per_call (200): the six machines in one call, got \(bulk)")
        #expect(!metered.isEmpty && metered.allSatisfy { $0 <= 2 }, "the provider's own max_ids_per_call: 2, got \(metered)")
        #expect(metered.reduce(0, +) >= 6)
    }

    /// The id counts of the Instances calls the fake shim logged as started.
    static func instancesCalls(_ file: String) throws -> [Int] {
        let text = try String(contentsOfFile: file, encoding: .utf8)
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count == 7, fields[2] == "start", fields[3] == "Instances" else { return nil }
            return Int(fields[5])
        }
    }
}
