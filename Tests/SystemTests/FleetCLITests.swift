import Controller
import Support
import ControlAPI
import Core
import Foundation
import SwiftProtobuf
import Testing
import TestSupport

/// The fleet-scale CLI end to end against a running controller: paged
/// listing in every format, the controller's filters, bulk import and
/// removal from files and stdin, and JSON that stays JSON whatever the
/// machines hold. One controller at a time: the suite runs beside the rest.
@Suite("Fleet CLI end to end", .serialized)
struct FleetCLITests {
    /// Five running instances c-1 … c-5, one address each.
    static func start(_ h: ControllerHarness) async throws -> ChildProcess {
        let scenario = try h.scenario("fleet", ControllerHarness.runningInstances((1...5).map { ("c-\($0)", "10.2.0.\($0)") }))
        try h.writeConfig(providers: [h.fakeProvider("cloud", scenario: scenario), h.fakeProvider("other", scenario: scenario)])
        return try await h.start()
    }

    static func jsonLines(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        }
    }

    @Test func importThenListPageByPageInEveryFormat() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let controller = try await Self.start(h)

        let csv = h.directory.file("fleet.csv")
        try """
            id,provider,credential,instance_id,agent_status,manual
            m1,cloud,main,c-1,,false
            m2,cloud,main,c-2,pending,
            m3,cloud,main,c-3,started,no
            "m4",cloud,main,"c-4",,0
            m5,other,main,c-5,,false
            m6,cloud,main,,,true

            """.write(toFile: csv, atomically: true, encoding: .utf8)
        var result = try await h.cli(["machines", "import", csv])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "imported 6 machines from \(csv): 6 added (1 transaction)\n")
        #expect(try await h.store.machines().map(\.id) == ["m1", "m2", "m3", "m4", "m5", "m6"])
        let m3 = try #require(try await h.store.machine(id: "m3"))
        #expect(m3.agentStatus == .started && m3.agentStartedAt != nil)
        #expect(try await h.store.machine(id: "m6")?.manual == true)
        try await h.waitForMachines("m1 … m5 to get their addresses") { machines in
            (1...5).allSatisfy { machines["m\($0)"]?.addressValues == ["10.2.0.\($0)"] }
        }

        // A table over three pages of two: one header, widths from the first page.
        result = try await h.cli(["machines", "list", "--page-size", "2"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 7)
        #expect(lines[0].hasPrefix("ID  PROVIDER  INSTANCE  STATE    AGENT    GROUP"))
        #expect(lines.dropFirst().map { String($0.prefix(2)) } == ["m1", "m2", "m3", "m4", "m5", "m6"])
        #expect(lines[1].hasPrefix("m1  cloud     c-1       running  none     long") && lines[1].contains("10.2.0.1"))
        #expect(lines[6].hasPrefix("m6  cloud     -"))

        // JSON: one array, streamed; the same with jsonl one per line.
        for pageSize in ["1", "2", "6", "1000"] {
            result = try await h.cli(["machines", "list", "--format", "json", "--page-size", pageSize])
            let array = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
            #expect(array.map { $0["id"] as? String } == ["m1", "m2", "m3", "m4", "m5", "m6"], "page size \(pageSize)")
            result = try await h.cli(["machines", "list", "--format", "jsonl", "--page-size", pageSize])
            #expect(try Self.jsonLines(result.stdout).map { $0["id"] as? String } == ["m1", "m2", "m3", "m4", "m5", "m6"])
        }
        let first = try Self.jsonLines(result.stdout)[0]
        #expect(first["instance_id"] as? String == "c-1" && first["provider"] as? String == "cloud")

        // The controller's filters.
        func ids(_ arguments: [String]) async throws -> [String] {
            let result = try await h.cli(["machines", "list", "--ids-only", "--page-size", "2"] + arguments)
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
            return result.stdout.split(separator: "\n").map(String.init)
        }
        #expect(try await ids([]) == ["m1", "m2", "m3", "m4", "m5", "m6"])
        #expect(try await ids(["--provider", "other"]) == ["m5"])
        #expect(try await ids(["--credential", "main", "--provider", "cloud"]) == ["m1", "m2", "m3", "m4", "m6"])
        #expect(try await ids(["--credential", "nope"]) == [])
        #expect(try await ids(["--agent-status", "pending"]) == ["m2"])
        #expect(try await ids(["--group", "short"]) == ["m2"], "a pending agent keeps it short")
        #expect(try await ids(["--group", "none"]) == ["m6"])
        #expect(try await ids(["--state", "stopped"]) == [])
        // The manual m6 is marked running by the poller, in its time.
        #expect(Set(["m1", "m2", "m3", "m4", "m5"]).isSubset(of: try await ids(["--state", "running"])))
        #expect(try await ids(["--with-error"]) == [])
        result = try await h.cli(["machines", "list", "--state", "runing"])
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("instancepoller: state: unknown state \"runing\" (expected one of: allocating, provisioning, running"))
        #expect(!result.stderr.dropLast().contains("\n"), "one line")

        result = try await h.cli(["status"])
        #expect(result.stdout.contains("polling     0 with a poll error, 0 overdue, 0 not found by their provider"))

        // Removal from a pipe of ids, as --ids-only prints them.
        let doomed = try await ids(["--provider", "cloud", "--agent-status", "none"])
        result = try await h.cli(["machines", "remove", "--file", "-"], stdin: doomed.joined(separator: "\n") + "\n")
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "removed 3 machines listed in stdin\n")
        #expect(try await h.store.machines().map(\.id) == ["m2", "m3", "m5"])
        #expect(try await h.stop(controller) == 0)
    }

    @Test func aBadFileImportsNothingAndSaysWhereEachProblemIs() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let controller = try await Self.start(h)
        try await h.store.addMachine(Machine(id: "taken", provider: "cloud", credential: "main"))

        // Problems this command finds: every one, with its line.
        let csv = h.directory.file("bad.csv")
        try """
            id,provider,credential,instance_id,agent_status,manual
            ok-1,cloud,main,c-1,,
            bad id,cloud,main,c-2,,
            ok-2,cloud,main,c 3,,
            ok-3,cloud,main,c-4,runing,
            ok-1,cloud,main,c-5,,maybe

            """.write(toFile: csv, atomically: true, encoding: .utf8)
        var result = try await h.cli(["machines", "import", csv])
        #expect(result.status == 2)
        let problems = result.stderr.split(separator: "\n").map(String.init)
        #expect(problems.count == 6, "\(problems)")
        #expect(problems[0].hasPrefix("instancepoller: \(csv):3: id: machine ids use letters"))
        #expect(problems[1].hasPrefix("instancepoller: \(csv):4: instance_id: instance ids hold no spaces"))
        #expect(problems[2].hasPrefix("instancepoller: \(csv):5: agent_status: unknown agent status \"runing\""))
        #expect(problems.contains { $0.hasPrefix("instancepoller: \(csv):6: id: \"ok-1\" already appears on line 2") })
        #expect(problems.contains { $0.hasPrefix("instancepoller: \(csv):6: manual:") })
        #expect(problems.last == "instancepoller: nothing imported: 5 problems in \(csv)")

        // Problems the controller finds: mapped back to their lines too.
        let jsonl = h.directory.file("bad.jsonl")
        try """
            {"id": "new-1", "provider": "cloud", "credential": "main"}
            {"id": "taken", "provider": "cloud", "credential": "main"}

            {"id": "new-2", "provider": "gcp", "credential": "main"}

            """.write(toFile: jsonl, atomically: true, encoding: .utf8)
        result = try await h.cli(["machines", "import", jsonl])
        #expect(result.status == 2)
        #expect(result.stderr == """
            instancepoller: \(jsonl):2: id: machine "taken" already exists
            instancepoller: \(jsonl):4: provider: no provider "gcp" is configured (configured: cloud, other)
            instancepoller: nothing imported: 2 problems in \(jsonl)

            """)
        #expect(try await h.store.machines().map(\.id) == ["taken"], "nothing imported")

        // Not a known format.
        result = try await h.cli(["machines", "import", "-"], stdin: "id,provider,credential\n")
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: stdin: cannot tell its format; name the file .csv, .jsonl or .yaml, or pass --input-format csv|jsonl|yaml\n")
        result = try await h.cli(["machines", "import", h.directory.file("missing.csv")])
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("instancepoller: \(h.directory.file("missing.csv")): cannot read the file"))
        #expect(try await h.store.machines().map(\.id) == ["taken"])
        #expect(try await h.stop(controller) == 0)
    }

    @Test func yamlAndStdinImportsAndUpdate() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let controller = try await Self.start(h)

        let yaml = h.directory.file("fleet.yaml")
        try """
            machines:
              - {id: y1, provider: cloud, credential: main, instance_id: c-1}
              - id: y2
                provider: cloud
                credential: main
                manual: true

            """.write(toFile: yaml, atomically: true, encoding: .utf8)
        var result = try await h.cli(["machines", "import", yaml])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try await h.store.machines().map(\.id) == ["y1", "y2"])

        // An id in use is refused without --update, and replaced with it.
        let again = "{\"id\": \"y1\", \"provider\": \"cloud\", \"credential\": \"main\", \"instance_id\": \"c-2\"}\n"
            + "{\"id\": \"y2\", \"provider\": \"cloud\", \"credential\": \"main\", \"manual\": true}\n"
            + "{\"id\": \"y3\", \"provider\": \"other\", \"credential\": \"main\", \"instance_id\": \"c-3\"}\n"
        result = try await h.cli(["machines", "import", "-", "--input-format", "jsonl"], stdin: again)
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("instancepoller: stdin:1: id: machine \"y1\" already exists\ninstancepoller: stdin:2: id: machine \"y2\" already exists\n"))
        result = try await h.cli(["machines", "import", "-", "--input-format", "jsonl", "--update", "--dry-run"], stdin: again)
        #expect(result.status == 0)
        #expect(result.stdout == "checked 3 machines in stdin: all can be imported (nothing imported: --dry-run)\n")
        #expect(try await h.store.machines().map(\.id) == ["y1", "y2"])
        result = try await h.cli(["machines", "import", "-", "--input-format", "jsonl", "--update", "--format", "json"], stdin: again)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == "{\"added\":1,\"updated\":1,\"unchanged\":1}\n")
        #expect(try await h.store.machine(id: "y1")?.instanceID == "c-2")
        #expect(try await h.store.machines().map(\.id) == ["y1", "y2", "y3"])

        // Unknown ids: nothing removed.
        let ids = h.directory.file("gone.txt")
        try "# retired\ny1\n\nnope\n".write(toFile: ids, atomically: true, encoding: .utf8)
        result = try await h.cli(["machines", "remove", "--file", ids])
        #expect(result.status == 2)
        #expect(result.stderr == "instancepoller: \(ids):4: id: no machine \"nope\"\ninstancepoller: nothing removed: 1 problem in \(ids)\n")
        #expect(try await h.store.machines().count == 3)
        result = try await h.cli(["machines", "remove", "y1", "--file", ids])
        #expect(result.status == 2)
        #expect(result.stderr.hasPrefix("instancepoller: give a machine id or --file FILE, not both"))
        #expect(try await h.stop(controller) == 0)
    }

    /// The frame limit with the real binaries: a machine of 8 interfaces
    /// larger than a 4 MiB frame still gets an answer that fits, without
    /// its interfaces (said so). (Pages cut by bytes across many machines:
    /// ControlPagingTests, on a smaller budget.)
    @Test func noAnswerExceedsTheFrameLimit() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let controller = try await Self.start(h)
        func interfaces(_ count: Int, bytes: Int) -> [ProviderV1.NetworkInterface] {
            (0..<count).map { index in
                .with {
                    $0.deviceIndex = Int32(index)
                    $0.providerID = "eni-\(index)-" + String(repeating: "x", count: bytes)
                    $0.addresses = [.with { $0.value = "10.3.0.\(index)"; $0.scope = .cloudLocal }]
                }
            }
        }
        // Not provisioned: the poller leaves what is written.
        try await h.store.addMachines([
            Machine(id: "fat", provider: "cloud", credential: "main", interfaces: interfaces(8, bytes: 1000)),
            Machine(id: "huge", provider: "cloud", credential: "main", interfaces: interfaces(8, bytes: 530_000)),
        ])

        let result = try await h.cli(["machines", "list", "--format", "jsonl"])
        #expect(result.status == 0, "\(result.stderr)")
        let machines = try Self.jsonLines(result.stdout)
        #expect(machines.map { $0["id"] as? String } == ["fat", "huge"])
        #expect((machines[0]["interfaces"] as? [Any])?.count == 8 && machines[0]["interfaces_omitted"] == nil)
        #expect(machines[1]["interfaces_omitted"] as? Bool == true && machines[1]["interfaces"] == nil)
        #expect(try await h.stop(controller) == 0)
    }

    @Test func jsonStaysJSONWhateverTheMachinesHold() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let controller = try await Self.start(h)
        // Written by another program straight into the store: no id rules
        // there. Not provisioned, so the poller leaves what is written.
        let odd = "we\"ird\\id\u{1}\ttab"
        let message = "line 1\nline 2 \"quoted\" \\ back\u{7f}\u{1b}[31mend"
        try await h.store.addMachines([
            Machine(id: odd, provider: "cloud", credential: "main"),
            Machine(id: "plain", provider: "cloud", credential: "main"),
        ])
        try await h.store.applyPoll([
            PollResult(machineID: odd, instanceStatus: InstanceStatusRecord(state: .unknown, rawStatus: "r\"aw", message: message), pollError: message),
        ], schedule: [])

        for format in ["json", "jsonl"] {
            let result = try await h.cli(["machines", "list", "--format", format, "--page-size", "1"])
            #expect(result.status == 0, "\(result.stderr)")
            let machines: [[String: Any]] = format == "json"
                ? try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
                : try Self.jsonLines(result.stdout)
            #expect(machines.map { $0["id"] as? String } == ["plain", odd])
            #expect(machines[1]["poll_error"] as? String == message)
            #expect((machines[1]["status"] as? [String: Any])?["message"] as? String == message)
        }
        var result = try await h.cli(["machines", "remove", odd, "--format", "json"])
        #expect(result.status == 0, "\(result.stderr)")
        let removed = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(removed["removed"] as? String == odd)
        result = try await h.cli(["watch", "--after", "0", "--no-follow", "--format", "jsonl"])
        #expect(try Self.jsonLines(result.stdout).contains { $0["machine_id"] as? String == odd && $0["kind"] as? String == "machine-removed" })
        #expect(try await h.stop(controller) == 0)
    }
}
