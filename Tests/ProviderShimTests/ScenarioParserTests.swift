import Core
import Support
import Foundation
import ProviderShim
import Testing
import FakeProvider

@Suite("Scenario files")
struct ScenarioParserTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let example = repositoryRoot + "/scripts/scenarios/example.yaml"

    @Test func theShippedExampleLoads() throws {
        let scenario = try FakeScenario.load(path: Self.example)
        #expect(scenario.name == "example")
        #expect(scenario.credentials?.map(\.name) == ["main", "revoked"])
        #expect(scenario.credentials?[1].valid == false)
        #expect(scenario.instances.map(\.id) == ["i-web-1", "i-db-1", "i-late-1"])
        let web = scenario.instances[0].timeline
        #expect(web.map(\.at) == [.zero, .seconds(3), .seconds(8), .seconds(120), .seconds(150)])
        #expect(web[2].state == .running)
        #expect(web[2].interfaces?.count == 2)
        #expect(web[2].interfaces?[0].shadowAddresses.first?.value == "203.0.113.10")
        #expect(web[2].interfaces?[0].addresses[1].type == .ipv6)
        #expect(web[2].interfaces?[1].addresses[0].type == .ipv4)  // inferred from the value
        #expect(web[4].gone)
        #expect(scenario.faults.map(\.kind) == [.throttle, .authFailure, .latency])
        #expect(scenario.faults[0].retryAfterNano == Duration.seconds(2).totalNanoseconds)
        #expect(scenario.faults[2].delayNano == Duration.milliseconds(20).totalNanoseconds)
    }

    @Test func jsonIsAcceptedToo() throws {
        let json = #"{"instances": [{"id": "i-1", "timeline": [{"at": "1.5s", "state": "running"}]}]}"#
        let scenario = try FakeScenario.parse(json, file: "s.json")
        #expect(scenario.instances[0].timeline[0].at == .milliseconds(1500))
        #expect(scenario.credentials == nil)
    }

    /// (text, expected "file:line:col: place: problem" fragment)
    @Test(arguments: [
        ("instances:\n  - id: i-1\n    timeline:\n      - at: 0s\n        state: runing\n",
         "bad.yaml:5:16: instances[0].timeline[0].state: unknown value \"runing\""),
        ("instances:\n  - id: i-1\n    timline: []\n",
         "bad.yaml:3:5: instances[0]: unknown key \"timline\""),
        ("instances:\n  - id: i-1\n    timeline:\n      - at: soon\n",
         "bad.yaml:4:13: instances[0].timeline[0].at: expected a duration"),
        ("instances:\n  - id: i-1\n    timeline:\n      - at: 5s\n      - at: 2s\n",
         "bad.yaml:5:13: instances[0].timeline[1].at: events must be in time order"),
        ("instances:\n  - timeline:\n      - at: 0s\n",
         "bad.yaml:2:5: instances[0]: an instance needs an id"),
        ("faults:\n  - kind: throttle\n    methods: [Instance]\n",
         "bad.yaml:3:14: faults[0].methods[0]: unknown method \"Instance\""),
        ("credentials:\n  - name: a\nfaults:\n  - kind: auth-failure\n    credential: b\n",
         "bad.yaml:5:17: faults[0].credential: no credential named \"b\""),
        ("faults:\n  - kind: crash\n",
         "bad.yaml:2:5: faults[0]: a crash fault needs after_calls"),
        ("instances: [\n", "bad.yaml:2:1: not valid YAML"),
        ("", "bad.yaml: the file is empty"),
        ("- just\n- a list\n", "bad.yaml:1:1: expected a mapping"),
    ] as [(String, String)])
    func mistakesNameFileLinePlaceAndProblem(text: String, expected: String) {
        #expect {
            _ = try FakeScenario.parse(text, file: "bad.yaml")
        } throws: { error in
            let line = "\(error)"
            return line.contains(expected) && !line.contains("\n")
        }
    }

    @Test func aMissingFileIsNamed() {
        #expect {
            _ = try FakeScenario.load(path: "/nonexistent/scenario.yaml")
        } throws: { error in
            "\(error)".hasPrefix("/nonexistent/scenario.yaml: cannot read the file")
        }
    }
}
