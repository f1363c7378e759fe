@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Foundation
import Testing

/// The file of `machines import` and `machines remove --file`: every
/// format, every field rule, and every problem named with file, line and
/// field on one line.
@Suite("Machine file")
struct MachineFileTests {
    static func machines(_ text: String, _ format: MachineFileFormat = .csv, file: String = "fleet.csv") throws(MachineFileProblems) -> [MachineRow] {
        try MachineFile.machines(Data(text.utf8), format: format, file: file)
    }

    /// The problems' descriptions for `data`, or ["no error"].
    static func problems(_ data: Data, _ format: MachineFileFormat = .csv, file: String = "fleet.csv") -> [String] {
        do {
            _ = try MachineFile.machines(data, format: format, file: file)
            return ["no error"]
        } catch {
            #expect(!error.truncated)
            return error.problems.map(\.description)
        }
    }

    static func problems(_ text: String, _ format: MachineFileFormat = .csv, file: String = "fleet.csv") -> [String] {
        problems(Data(text.utf8), format, file: file)
    }

    static func ids(_ text: String, _ format: MachineFileFormat, file: String = "gone.txt") throws(MachineFileProblems) -> [MachineIDRow] {
        try MachineFile.ids(Data(text.utf8), format: format, file: file)
    }

    static func idProblems(_ text: String, _ format: MachineFileFormat, file: String = "gone.txt") -> [String] {
        do {
            _ = try MachineFile.ids(Data(text.utf8), format: format, file: file)
            return ["no error"]
        } catch {
            return error.problems.map(\.description)
        }
    }

    static let header = "id,provider,credential,instance_id,agent_status,manual\n"

    // MARK: - CSV

    @Test func csvWithEveryFieldAndTheDefaults() throws {
        let rows = try Self.machines(Self.header + """
            m-1,aws,main,i-0abc,started,true
            m-2,aws,main,,,
            rack/b:3,gce,other.key,,pending,NO
            m-4,aws,main,i-4,down,1
            m-5,aws,main,i-5,error,false
            """)
        #expect(rows == [
            MachineRow(line: 2, id: "m-1", provider: "aws", credential: "main", instanceID: "i-0abc", agentStatus: .started, manual: true),
            MachineRow(line: 3, id: "m-2", provider: "aws", credential: "main"),
            MachineRow(line: 4, id: "rack/b:3", provider: "gce", credential: "other.key", agentStatus: .pending),
            MachineRow(line: 5, id: "m-4", provider: "aws", credential: "main", instanceID: "i-4", agentStatus: .down, manual: true),
            MachineRow(line: 6, id: "m-5", provider: "aws", credential: "main", instanceID: "i-5", agentStatus: .error),
        ])
        #expect(rows[1].agentStatus == .none && rows[1].manual == false && rows[1].instanceID.isEmpty)
    }

    @Test func csvColumnsInAnyOrderAndOnlyTheRequiredOnes() throws {
        let rows = try Self.machines("credential,manual,id,provider\nmain,yes,m-1,aws\nkey2,,m-2,gce\n")
        #expect(rows == [
            MachineRow(line: 2, id: "m-1", provider: "aws", credential: "main", manual: true),
            MachineRow(line: 3, id: "m-2", provider: "gce", credential: "key2"),
        ])
        // Spaces around header names are fine; spaces in values are not.
        let spaced = try Self.machines("id, provider , credential\nm-1,aws,main\n")
        #expect(spaced == [MachineRow(line: 2, id: "m-1", provider: "aws", credential: "main")])
    }

    @Test func csvQuotedFields() throws {
        let rows = try Self.machines(Self.header + """
            "m-1","aws","main","i,1","started","TRUE"
            m-2,aws,main,"i""2",,""
            "m-3",aws,main,,,
            """)
        #expect(rows.map(\.instanceID) == ["i,1", "i\"2", ""])
        #expect(rows.map(\.id) == ["m-1", "m-2", "m-3"])
        #expect(rows[0].manual && rows[0].agentStatus == .started)
        #expect(Self.problems(Self.header + "\"\",aws,main,,,\n") == ["fleet.csv:2: id: a machine id is needed"])
    }

    /// A quoted field may hold line ends; a row's line is where it starts,
    /// and the rows after it keep their true lines.
    @Test func csvNewlinesInQuotedFieldsKeepTheLines() throws {
        let text = "id,instance_id,provider\nm-1,\"two\nlines\",aws\nm-2,\"three\r\nmore\nlines\",aws\nm-3,i-3,aws\n"
        let ids = try Self.ids(text, .csv, file: "gone.csv")
        #expect(ids == [MachineIDRow(line: 2, id: "m-1"), MachineIDRow(line: 4, id: "m-2"), MachineIDRow(line: 7, id: "m-3")])
        let problems = Self.problems(Self.header + "m-1,aws,main,\"i-1\nx\",,\nm-2,aws,main,,runing,\nm-3,aws,main,,,\"a\nb\"\nm-1,aws,main,,,\n")
        #expect(problems == [
            #"fleet.csv:2: instance_id: instance ids hold no spaces or control characters (got "i-1\nx")"#,
            #"fleet.csv:4: agent_status: unknown agent status "runing" (expected one of: none, pending, started, error, down)"#,
            #"fleet.csv:5: manual: expected true, false, yes, no, 1, 0 or nothing (got "a\nb")"#,
            #"fleet.csv:7: id: "m-1" already appears on line 2"#,
        ])
    }

    @Test func csvWindowsLineEndsAndByteOrderMark() throws {
        let rows = try Self.machines("\u{FEFF}id,provider,credential,manual\r\nm-1,aws,main,true\r\nm-2,aws,\"main\",\r\n")
        #expect(rows == [
            MachineRow(line: 2, id: "m-1", provider: "aws", credential: "main", manual: true),
            MachineRow(line: 3, id: "m-2", provider: "aws", credential: "main"),
        ])
        // A quoted last field before "\r\n", and no line end at the end.
        let quotedLast = try Self.machines("\u{FEFF}id,provider,credential\r\nm-1,aws,\"main\"\r\nm-2,aws,\"k\"")
        #expect(quotedLast.map(\.credential) == ["main", "k"])
        #expect(quotedLast.map(\.line) == [2, 3])
    }

    @Test func csvEmptyLinesAreSkipped() throws {
        let rows = try Self.machines("\n\nid,provider,credential\n\nm-1,aws,main\n\r\nm-2,aws,main\n\n\n")
        #expect(rows.map(\.line) == [5, 7])
        #expect(rows.map(\.id) == ["m-1", "m-2"])
    }

    @Test func csvHeaderProblems() {
        #expect(Self.problems("id,provider\nm-1,aws\n") == [
            #"fleet.csv:1: the header has no column "credential" (needed: id, provider, credential)"#,
        ])
        #expect(Self.problems("id,provider,credential,zone,id\nm-1,aws,main,z,m-1\n") == [
            #"fleet.csv:1: unknown column "zone" (known columns: id, provider, credential, instance_id, agent_status, manual)"#,
            #"fleet.csv:1: column "id" appears twice"#,
        ])
        // A file without a header: its first row is read as one.
        #expect(Self.problems("m-1,aws,main\n") == [
            #"fleet.csv:1: unknown column "m-1" (known columns: id, provider, credential, instance_id, agent_status, manual)"#,
            #"fleet.csv:1: unknown column "aws" (known columns: id, provider, credential, instance_id, agent_status, manual)"#,
            #"fleet.csv:1: unknown column "main" (known columns: id, provider, credential, instance_id, agent_status, manual)"#,
            #"fleet.csv:1: the header has no column "id" (needed: id, provider, credential)"#,
            #"fleet.csv:1: the header has no column "provider" (needed: id, provider, credential)"#,
            #"fleet.csv:1: the header has no column "credential" (needed: id, provider, credential)"#,
        ])
    }

    @Test func csvRowsWithTheWrongNumberOfFields() {
        #expect(Self.problems(Self.header + "m-1,aws,main,i-1,started\nm-2,aws,main,,,,\nm-3\n") == [
            "fleet.csv:2: row has 5 fields, the header 6",
            "fleet.csv:3: row has 7 fields, the header 6",
            "fleet.csv:4: row has 1 field, the header 6",
        ])
    }

    @Test func csvQuotesThatAreNotCSV() {
        #expect(Self.problems("id,provider,credential\nm-1,aws,\"main\nm-2,aws,main\n") == [
            "fleet.csv:2: the quoted field that starts on this line has no closing quote",
        ])
        #expect(Self.problems("id,provider,credential\nm-1,aws,\"main\"x\nm-2,a\"ws,main\nm-3,aws,main\n") == [
            "fleet.csv:2: text after the closing quote of field 3",
            "fleet.csv:3: a quote inside unquoted field 2 (quote the whole field and double the quotes in it)",
        ])
        // A broken header: nothing after it is read.
        #expect(Self.problems("id,\"provider\nm-1,aws,main\n") == [
            "fleet.csv:1: the quoted field that starts on this line has no closing quote",
        ])
    }

    @Test func csvManualValues() throws {
        let rows = try Self.machines("id,provider,credential,manual\na,p,c,True\nb,p,c,YES\nc,p,c,1\nd,p,c,False\ne,p,c,no\nf,p,c,0\ng,p,c,\n")
        #expect(rows.map(\.manual) == [true, true, true, false, false, false, false])
        #expect(Self.problems("id,provider,credential,manual\na,p,c,maybe\nb,p,c, true\nc,p,c,2\n") == [
            #"fleet.csv:2: manual: expected true, false, yes, no, 1, 0 or nothing (got "maybe")"#,
            #"fleet.csv:3: manual: expected true, false, yes, no, 1, 0 or nothing (got " true")"#,
            #"fleet.csv:4: manual: expected true, false, yes, no, 1, 0 or nothing (got "2")"#,
        ])
    }

    /// Unquoted values are not trimmed: a space makes the value wrong.
    @Test func csvSpacesAroundValuesAreKept() {
        #expect(Self.problems("id,provider,credential\nm-1, aws,main\n") == [
            #"fleet.csv:2: provider: provider names are 1 to 256 letters, digits, '-', '_' and '.' (got " aws")"#,
        ])
    }

    @Test func csvThatIsNotUTF8() {
        var data = Data("id,provider,credential\nm-1,aws,main\nm-2,".utf8)
        data.append(contentsOf: [0xFF, 0xFE])
        data.append(contentsOf: Data(",main\n".utf8))
        #expect(Self.problems(data) == ["fleet.csv:3: not UTF-8 text"])
    }

    // MARK: - JSONL

    @Test func jsonlWithEveryFieldAndTheDefaults() throws {
        let rows = try Self.machines("""
            {"id": "m-1", "provider": "aws", "credential": "main", "instance_id": "i-1", "agent_status": "started", "manual": true}

            {"id":"m-2","provider":"aws","credential":"main"}
              \t
            {"id": "m-3", "provider": "gce", "credential": "k", "instance_id": "", "agent_status": "", "manual": false}\r
            """, .jsonl, file: "fleet.jsonl")
        #expect(rows == [
            MachineRow(line: 1, id: "m-1", provider: "aws", credential: "main", instanceID: "i-1", agentStatus: .started, manual: true),
            MachineRow(line: 3, id: "m-2", provider: "aws", credential: "main"),
            MachineRow(line: 5, id: "m-3", provider: "gce", credential: "k"),
        ])
    }

    @Test func jsonlProblems() {
        let problems = Self.problems("""
            {"id": "m-1", "provider": "aws",
            ["m-2"]
            "m-3"
            {"id": "m-4", "provider": 5, "credential": null}
            {"id": "m-5", "provider": "aws", "credential": "main", "manual": "true"}
            {"id": "m-6", "provider": "aws", "credential": "main", "manual": 1}
            {"id": "m-7", "provider": "aws", "credential": "main", "manual": 0}
            {"id": "m-8", "provider": "aws", "credential": "main", "zone": "a", "Id": "x"}
            {"id": "m-9", "credential": "main"}
            {"id": ["m-10"], "provider": "aws", "credential": "main", "instance_id": {"a": 1}}
            """, .jsonl, file: "fleet.jsonl")
        #expect(problems.count == 13)
        #expect(problems.first?.hasPrefix("fleet.jsonl:1: invalid JSON: ") == true)
        #expect(Array(problems.dropFirst()) == [
            "fleet.jsonl:2: not a JSON object",
            "fleet.jsonl:3: not a JSON object",
            "fleet.jsonl:4: provider: expected a string, not a number",
            "fleet.jsonl:4: credential: expected a string, not null",
            #"fleet.jsonl:5: manual: expected true or false, not "true""#,
            "fleet.jsonl:6: manual: expected true or false, not a number",
            "fleet.jsonl:7: manual: expected true or false, not a number",
            #"fleet.jsonl:8: unknown key "Id" (known keys: id, provider, credential, instance_id, agent_status, manual)"#,
            #"fleet.jsonl:8: unknown key "zone" (known keys: id, provider, credential, instance_id, agent_status, manual)"#,
            "fleet.jsonl:9: provider: a provider name is needed",
            "fleet.jsonl:10: id: expected a string, not a list",
            "fleet.jsonl:10: instance_id: expected a string, not an object",
        ])
    }

    @Test func jsonlWrongTypesOfEveryField() {
        #expect(Self.problems(#"{"id": 7, "provider": true, "credential": [], "instance_id": 1.5, "agent_status": {}, "manual": null}"#, .jsonl, file: "f.jsonl") == [
            "f.jsonl:1: id: expected a string, not a number",
            "f.jsonl:1: provider: expected a string, not true or false",
            "f.jsonl:1: credential: expected a string, not a list",
            "f.jsonl:1: instance_id: expected a string, not a number",
            "f.jsonl:1: agent_status: expected a string, not an object",
            "f.jsonl:1: manual: expected true or false, not null",
        ])
    }

    /// JSONSerialization keeps the last of a repeated key; the reader
    /// refuses the line instead.
    @Test func jsonlRepeatedKeys() throws {
        #expect(Self.problems(#"{"id": "a", "provider": "p", "credential": "c", "id": "b"}"#, .jsonl, file: "f.jsonl") == [
            #"f.jsonl:1: key "id" appears twice"#,
        ])
        #expect(Self.problems(#"{"id": "a", "provider": "p", "credential": "c", "i\u0064": "b"}"#, .jsonl, file: "f.jsonl") == [
            "f.jsonl:1: a key appears twice",
        ])
        // Keys inside nested values and quotes, commas and braces inside strings are not top-level keys.
        let ids = try Self.ids(#"{"id": "m-1", "instance_id": {"id": 1, "x": [1, {"id": 2}]}, "provider": "a,\"id\":{"}"#, .jsonl, file: "f.jsonl")
        #expect(ids == [MachineIDRow(line: 1, id: "m-1")])
    }

    // MARK: - YAML

    @Test func yamlAListOfMachines() throws {
        let rows = try Self.machines("""
            # the fleet
            - id: m-1
              provider: aws
              credential: main
              instance_id: i-1
              agent_status: started
              manual: true
            - {id: m-2, provider: aws, credential: main, instance_id: , agent_status: ~, manual: no}
            - id: "007"
              provider: gce
              credential: k
            """, .yaml, file: "fleet.yaml")
        #expect(rows == [
            MachineRow(line: 2, id: "m-1", provider: "aws", credential: "main", instanceID: "i-1", agentStatus: .started, manual: true),
            MachineRow(line: 8, id: "m-2", provider: "aws", credential: "main"),
            MachineRow(line: 9, id: "007", provider: "gce", credential: "k"),
        ])
    }

    @Test func yamlMachinesUnderTheKeyMachines() throws {
        let rows = try Self.machines("""
            machines:
              - id: m-1
                provider: aws
                credential: main
                manual: false
              - id: m-2
                provider: aws
                credential: main
            """, .yaml, file: "fleet.yml")
        #expect(rows == [
            MachineRow(line: 2, id: "m-1", provider: "aws", credential: "main"),
            MachineRow(line: 6, id: "m-2", provider: "aws", credential: "main"),
        ])
    }

    @Test func yamlProblems() {
        #expect(Self.problems("""
            - id: m-1
              provider: aws
              credential: main
              zone: a
            - id: m-2
              provider: aws
              credential: main
              manual: "true"
            - id: m-3
              provider: [aws]
              credential: main
              manual: 1
            - just-an-id
            - id: m-1
              provider: aws
              credential: main
            """, .yaml, file: "fleet.yaml") == [
            #"fleet.yaml:4: unknown key "zone" (known keys: id, provider, credential, instance_id, agent_status, manual)"#,
            #"fleet.yaml:8: manual: expected true or false, not "true""#,
            "fleet.yaml:10: provider: expected a string, not a list",
            #"fleet.yaml:12: manual: expected true or false, not "1""#,
            "fleet.yaml:13: expected a mapping with the keys id, provider, credential, instance_id, agent_status, manual, not a string",
            #"fleet.yaml:14: id: "m-1" already appears on line 1"#,
        ])
        #expect(Self.problems("machines: 3\nextra: []\n", .yaml, file: "f.yaml") == [
            "f.yaml:1: machines: expected a list of machines",
            #"f.yaml:2: unknown key "extra" (the file is a list of machines, bare or under the key machines)"#,
        ])
        #expect(Self.problems("just text\n", .yaml, file: "f.yaml") == [
            "f.yaml:1: expected a list of machines, bare or under the key machines",
        ])
    }

    @Test func yamlSyntaxErrorIsOneProblemWithItsLine() {
        let problems = Self.problems("- id: m-1\n  provider: aws\n  credential: [main\n- id: m-2\n", .yaml, file: "fleet.yaml")
        #expect(problems.count == 1)
        #expect(problems[0].hasPrefix("fleet.yaml:4: not valid YAML: "), "\(problems)")
        let duplicate = Self.problems("- id: m-1\n  provider: aws\n  provider: gce\n  credential: main\n", .yaml, file: "fleet.yaml")
        #expect(duplicate.count == 1)
        #expect(duplicate[0].contains("duplicated keys provider"), "\(duplicate)")
    }

    // MARK: - The field rules

    @Test func everyFieldRule() {
        let long = String(repeating: "a", count: 300)
        let problems = Self.problems(Self.header + """
            m 1,aws,main,,,
            \(long),aws,main,,,
            m-3,aws,main,"i 3",,
            m-4,a/ws,main,,,
            m-5,aws,,,,
            m-6,aws,main,,runing,
            m-7,aws,main,\(String(repeating: "i", count: 257)),,
            """)
        #expect(problems == [
            #"fleet.csv:2: id: machine ids use letters, digits, '-', '_', '.', '/' and ':' (got "m 1")"#,
            "fleet.csv:3: id: machine ids are at most 256 characters (got 300)",
            #"fleet.csv:4: instance_id: instance ids hold no spaces or control characters (got "i 3")"#,
            #"fleet.csv:5: provider: provider names are 1 to 256 letters, digits, '-', '_' and '.' (got "a/ws")"#,
            "fleet.csv:6: credential: a credential name is needed",
            #"fleet.csv:7: agent_status: unknown agent status "runing" (expected one of: none, pending, started, error, down)"#,
            "fleet.csv:8: instance_id: instance ids are at most 256 characters (got 257)",
        ])
        #expect(!problems.joined().contains(String(repeating: "a", count: 65)), "a long value is not echoed in full")
    }

    @Test func everyProblemOfARowIsReported() {
        #expect(Self.problems(Self.header + "m 1,a ws,,i 1,up,maybe\n") == [
            #"fleet.csv:2: id: machine ids use letters, digits, '-', '_', '.', '/' and ':' (got "m 1")"#,
            #"fleet.csv:2: provider: provider names are 1 to 256 letters, digits, '-', '_' and '.' (got "a ws")"#,
            "fleet.csv:2: credential: a credential name is needed",
            #"fleet.csv:2: instance_id: instance ids hold no spaces or control characters (got "i 1")"#,
            #"fleet.csv:2: agent_status: unknown agent status "up" (expected one of: none, pending, started, error, down)"#,
            #"fleet.csv:2: manual: expected true, false, yes, no, 1, 0 or nothing (got "maybe")"#,
        ])
    }

    @Test func duplicateIDsNameTheFirstLine() {
        #expect(Self.problems(Self.header + "m-1,aws,main,,,\nm-2,aws,main,,,\nm-1,gce,k,,,\nm-2,aws,main,,,\nm-1,aws,main,,,\n") == [
            #"fleet.csv:4: id: "m-1" already appears on line 2"#,
            #"fleet.csv:5: id: "m-2" already appears on line 3"#,
            #"fleet.csv:6: id: "m-1" already appears on line 2"#,
        ])
        #expect(Self.problems("{\"id\":\"a\",\"provider\":\"p\",\"credential\":\"c\"}\n\n{\"id\":\"a\",\"provider\":\"p\",\"credential\":\"c\"}\n", .jsonl, file: "f.jsonl") == [
            #"f.jsonl:3: id: "a" already appears on line 1"#,
        ])
    }

    @Test func allProblemsOfTheFileAreReportedAndNothingIsReturned() throws {
        let text = Self.header + "m-1,aws,main,,,\nbad id,aws,main,,,\nm-3,aws,main,,,\nm-4,aws,main,,sleeping,\nm-5,aws,main,,,\nm-6,aws,main,,,x\n"
        do {
            _ = try Self.machines(text)
            Issue.record("a file with bad rows is refused")
        } catch {
            #expect(error.problems.map(\.line) == [3, 5, 7])
            #expect(error.problems.map(\.field) == ["id", "agent_status", "manual"])
            #expect(error.problems.allSatisfy { $0.file == "fleet.csv" })
            #expect(!error.truncated)
            #expect(error.description.split(separator: "\n").count == 3)
        }
    }

    @Test func atMostAThousandProblemsAreListed() {
        let text = Self.header + (1...1500).map { "bad id \($0),aws,main,,,\n" }.joined()
        do {
            _ = try Self.machines(text)
            Issue.record("a file with bad rows is refused")
        } catch {
            #expect(error.problems.count == MachineFile.maxProblems)
            #expect(error.truncated)
            #expect(error.problems.last?.line == 1001)
            #expect(error.description.split(separator: "\n").last == "fleet.csv: more problems; the first 1000 are listed")
        }
    }

    @Test func emptyFiles() {
        #expect(Self.problems("") == ["fleet.csv: no machines in the file"])
        #expect(Self.problems("\n\n") == ["fleet.csv: no machines in the file"])
        #expect(Self.problems(Self.header + "\n") == ["fleet.csv: no machines in the file"])
        #expect(Self.problems("\n \n", .jsonl, file: "-") == ["-: no machines in the file"])
        #expect(Self.problems("", .yaml, file: "stdin") == ["stdin: no machines in the file"])
        #expect(Self.problems("# nothing yet\n", .yaml, file: "stdin") == ["stdin: no machines in the file"])
        #expect(Self.problems("[]", .yaml, file: "stdin") == ["stdin: no machines in the file"])
        #expect(Self.problems("machines:\n", .yaml, file: "stdin") == ["stdin: no machines in the file"])
        #expect(Self.idProblems("", .ids) == ["gone.txt: no machine ids in the file"])
        #expect(Self.idProblems("# only a comment\n\n", .ids) == ["gone.txt: no machine ids in the file"])
        #expect(Self.idProblems("id\n", .csv) == ["gone.txt: no machine ids in the file"])
    }

    @Test func anIDsFileIsNotAMachineFile() {
        #expect(Self.problems("m-1\n", .ids, file: "gone.txt") == [
            "gone.txt: an ids file lists machine ids, for removal; import reads csv, jsonl or yaml",
        ])
    }

    // MARK: - One line

    @Test func descriptionsAreOneLine() {
        let problems = Self.problems(Self.header + "\"m\n1\",aws,main,\"i\u{1}\",,\n\"x\ty\",p,c,,\"run\r\nning\",\n")
        #expect(problems == [
            #"fleet.csv:2: id: machine ids use letters, digits, '-', '_', '.', '/' and ':' (got "m\n1")"#,
            #"fleet.csv:2: instance_id: instance ids hold no spaces or control characters (got "i\u{1}")"#,
            #"fleet.csv:4: id: machine ids use letters, digits, '-', '_', '.', '/' and ':' (got "x\ty")"#,
            #"fleet.csv:4: agent_status: unknown agent status "run\r\nning" (expected one of: none, pending, started, error, down)"#,
        ])
        let made = MachineFileProblem(file: "a\nb", line: 2, field: "id", problem: "two\nlines and a bell \u{7}")
        #expect(made.description == #"a\nb:2: id: two\nlines and a bell \u{7}"#)
        #expect(MachineFileProblem(file: "f", line: 3, problem: "p").description == "f:3: p")
        #expect(MachineFileProblem(file: "f", problem: "p").description == "f: p")
        let unknownKey = Self.problems("{\"id\":\"m-1\",\"provider\":\"p\",\"credential\":\"c\",\"a\\nb\":1}\n", .jsonl, file: "f.jsonl")
        #expect(unknownKey == [#"f.jsonl:1: unknown key "a\nb" (known keys: id, provider, credential, instance_id, agent_status, manual)"#])
        for problem in Self.problems("{\"id\": \"m\u{1}\n", .jsonl, file: "f.jsonl") {
            #expect(!problem.contains("\n") && !problem.contains("\u{1}"))
        }
    }

    // MARK: - ids for removal

    @Test func idsOnePerLine() throws {
        let ids = try Self.ids("# machines to remove\nm-1\n\n  m-2  \r\n\t# indented comment\nrack/b:3\n", .ids)
        #expect(ids == [MachineIDRow(line: 2, id: "m-1"), MachineIDRow(line: 4, id: "m-2"), MachineIDRow(line: 6, id: "rack/b:3")])
        #expect(Self.idProblems("m-1\nm 2\nm-1\n", .ids) == [
            #"gone.txt:2: id: machine ids use letters, digits, '-', '_', '.', '/' and ':' (got "m 2")"#,
            #"gone.txt:3: id: "m-1" already appears on line 1"#,
        ])
    }

    @Test func idsFromCSV() throws {
        let ids = try Self.ids(Self.header + "m-1,aws,main,,bogus,maybe\nm-2,,,,,\n", .csv, file: "gone.csv")
        #expect(ids == [MachineIDRow(line: 2, id: "m-1"), MachineIDRow(line: 3, id: "m-2")], "other known columns are not checked")
        #expect(try Self.ids("id\nm-1\n\"m-2\"\n", .csv) == [MachineIDRow(line: 2, id: "m-1"), MachineIDRow(line: 3, id: "m-2")])
        #expect(Self.idProblems("id,zone\nm-1,a\n", .csv, file: "gone.csv") == [
            #"gone.csv:1: unknown column "zone" (known columns: id, provider, credential, instance_id, agent_status, manual)"#,
        ])
        #expect(Self.idProblems("provider\naws\n", .csv, file: "gone.csv") == [
            #"gone.csv:1: the header has no column "id" (needed: id)"#,
        ])
        #expect(Self.idProblems("id\nm-1\nm-1\n,\n", .csv, file: "gone.csv") == [
            #"gone.csv:3: id: "m-1" already appears on line 2"#,
            "gone.csv:4: row has 2 fields, the header 1",
        ])
    }

    @Test func idsFromJSONL() throws {
        let ids = try Self.ids("{\"id\": \"m-1\", \"provider\": 5, \"manual\": \"x\"}\n\n{\"id\": \"m-2\"}\n", .jsonl, file: "gone.jsonl")
        #expect(ids == [MachineIDRow(line: 1, id: "m-1"), MachineIDRow(line: 3, id: "m-2")])
        #expect(Self.idProblems("{\"id\": 1}\n{\"name\": \"m-2\"}\n\"m-3\"\n{\"id\": \"m-4\"}\n{\"id\": \"m-4\"}\n", .jsonl, file: "gone.jsonl") == [
            "gone.jsonl:1: id: expected a string, not a number",
            #"gone.jsonl:2: unknown key "name" (known keys: id, provider, credential, instance_id, agent_status, manual)"#,
            "gone.jsonl:2: id: a machine id is needed",
            "gone.jsonl:3: not a JSON object",
            #"gone.jsonl:5: id: "m-4" already appears on line 4"#,
        ])
    }

    @Test func idsFromYAML() throws {
        #expect(try Self.ids("- m-1\n- \"m-2\"\n# a comment\n- m-3\n", .yaml) == [
            MachineIDRow(line: 1, id: "m-1"), MachineIDRow(line: 2, id: "m-2"), MachineIDRow(line: 4, id: "m-3"),
        ])
        let mappings = try Self.ids("machines:\n  - id: m-1\n    provider: aws\n    manual: maybe\n  - {id: m-2}\n  - m-3\n", .yaml)
        #expect(mappings == [MachineIDRow(line: 2, id: "m-1"), MachineIDRow(line: 5, id: "m-2"), MachineIDRow(line: 6, id: "m-3")])
        #expect(Self.idProblems("- m-1\n- [m-2]\n- {name: m-3}\n- m-1\n- ~\n", .yaml, file: "gone.yaml") == [
            "gone.yaml:2: expected an id or a mapping with the key id, not a list",
            #"gone.yaml:3: unknown key "name" (known keys: id, provider, credential, instance_id, agent_status, manual)"#,
            "gone.yaml:3: id: a machine id is needed",
            #"gone.yaml:4: id: "m-1" already appears on line 1"#,
            "gone.yaml:5: id: a machine id is needed",
        ])
    }

    // MARK: - Format by name, and size

    @Test func formatForPath() {
        #expect(MachineFile.format(forPath: "fleet.csv") == .csv)
        #expect(MachineFile.format(forPath: "/tmp/a.b/FLEET.CSV") == .csv)
        #expect(MachineFile.format(forPath: "fleet.jsonl") == .jsonl)
        #expect(MachineFile.format(forPath: "fleet.ndjson") == .jsonl)
        #expect(MachineFile.format(forPath: "fleet.yaml") == .yaml)
        #expect(MachineFile.format(forPath: "dir/fleet.yml") == .yaml)
        #expect(MachineFile.format(forPath: "gone.txt") == .ids)
        #expect(MachineFile.format(forPath: "-") == nil)
        #expect(MachineFile.format(forPath: "fleet") == nil)
        #expect(MachineFile.format(forPath: "fleet.json") == nil)
        #expect(MachineFile.format(forPath: "a.csv/fleet") == nil)
        #expect(MachineFile.format(forPath: ".csv") == nil)
        #expect(MachineFile.format(forPath: "fleet.") == nil)
    }

    @Test func aHundredThousandCSVRows() throws {
        var text = Self.header
        text.reserveCapacity(5_000_000)
        for index in 0..<100_000 {
            text += "machine-\(index),aws,main,i-\(String(index, radix: 16)),\(index % 3 == 0 ? "started" : ""),\(index % 2 == 0)\n"
        }
        let rows = try Self.machines(text)
        #expect(rows.count == 100_000)
        #expect(rows.first == MachineRow(line: 2, id: "machine-0", provider: "aws", credential: "main", instanceID: "i-0", agentStatus: .started, manual: true))
        #expect(rows.last == MachineRow(line: 100_001, id: "machine-99999", provider: "aws", credential: "main", instanceID: "i-1869f", agentStatus: .started, manual: false))
        #expect(Set(rows.map(\.id)).count == 100_000)
    }
}
