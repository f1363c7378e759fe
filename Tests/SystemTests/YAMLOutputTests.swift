import Controller
import Foundation
import Testing
import TestSupport
import Yams

/// `--format yaml` carries the same fields and values as `--format json`:
/// each command's YAML is read back and compared with its JSON.
@Suite("--format yaml with the real binaries")
struct YAMLOutputTests {
    /// A value made comparable: JSON and YAML readers give numbers and
    /// booleans different types, so both go through JSON text, keys sorted.
    static func canonical(_ value: Any) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])
        return String(decoding: data, as: UTF8.self)
    }

    /// `instancepoller ARGS --format json` and `--format yaml`, each read.
    static func both(_ h: ControllerHarness, _ arguments: [String]) async throws -> (json: Any, yaml: Any, yamlText: String) {
        let json = try await h.cli(arguments + ["--format", "json"])
        let yaml = try await h.cli(arguments + ["--format", "yaml"])
        #expect(json.status == 0 && yaml.status == 0, "\(arguments): \(json.stderr) \(yaml.stderr)")
        let fromJSON = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8), options: [.fragmentsAllowed])
        let fromYAML = try #require(try Yams.load(yaml: yaml.stdout), "\(arguments): \(yaml.stdout)")
        return (fromJSON, fromYAML, yaml.stdout)
    }

    @Test func yamlHasTheJSONsFieldsForEveryKindOfAnswer() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("yaml", ControllerHarness.runningInstances([("c-1", "10.9.0.1"), ("c-2", "10.9.0.2")]))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario)])
        let controller = try await h.start()
        // Ids a plain YAML scalar would turn into another type, or mangle.
        for (id, instance) in [("m1", "c-1"), ("007", "c-2"), ("yes", "c-1"), ("1:30", "c-2"), ("1e3", "c-1"), ("null", "c-2")] {
            let added = try await h.cli(["machines", "add", "--provider", "cloud", "--credential", "main", "--instance-id", instance, "--", id])
            #expect(added.status == 0, "\(added.stderr)")
        }
        try await h.waitForMachines("the machines to be polled") { machines in
            ["m1", "007", "yes", "1:30", "1e3", "null"].allSatisfy { machines[$0]?.addresses.isEmpty == false }
        }
        for command in [["status"], ["machines", "list"], ["machines", "show", "007"], ["providers", "list"], ["credentials", "list"]] {
            let (json, yaml, text) = try await Self.both(h, command)
            #expect(try Self.canonical(yaml) == Self.canonical(json), "\(command): \(text)")
        }
        // A listing is a sequence, in the JSON's order; ids stay strings.
        let (_, listed, text) = try await Self.both(h, ["machines", "list"])
        let ids = try #require(listed as? [[String: Any]], "\(text)").map { $0["id"] as? String }
        #expect(Set(ids.compactMap { $0 }) == ["m1", "007", "yes", "1:30", "1e3", "null"], "\(text)")
        #expect(text.hasPrefix("- "), "a block sequence: \(text)")

        // An empty listing is an empty sequence, as JSON's [].
        let (json, yaml, _) = try await Self.both(h, ["machines", "list", "--provider", "nobody"])
        #expect((json as? [Any])?.isEmpty == true && (yaml as? [Any])?.isEmpty == true)
        #expect(try await h.stop(controller) == 0)
    }
}
