import Core
import Foundation
import Logging
import Testing
import TestSupport
import Support

/// Log lines as operators read them: logfmt (`human`) or one JSON object.
@Suite("Line log handler")
struct LineLogHandlerTests {
    static func lines(format: LineLogHandler.Format, level: Logger.Level = .info, _ body: (Logger) -> Void) throws -> [String] {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("log")
        FileManager.default.createFile(atPath: path, contents: nil)
        let fd = open(path, O_WRONLY | O_APPEND)
        var logger = Logger(label: "instancepoller") { LineLogHandler(label: $0, level: level, format: format, fileDescriptor: fd) }
        logger[metadataKey: "provider"] = "aws"
        body(logger)
        close(fd)
        return try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }
    @Test func humanLinesAreLogfmtWithTsLevelMsgFirstThenSortedKeys() throws {
        let lines = try Self.lines(format: .human) { logger in
            logger.warning("shim down", metadata: ["why": "exited with status 3", "pid": "42"])
            logger.debug("not shown below the level")
        }
        #expect(lines.count == 1)
        let line = try #require(lines.first)
        #expect(line.range(of: #"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=warning msg="shim down" pid=42 provider=aws why="exited with status 3"$"#, options: .regularExpression) != nil, "\(line)")
    }

    @Test func humanValuesAreQuotedAndEscapedAsGoLogfmtDoes() throws {
        let lines = try Self.lines(format: .human) { logger in
            logger.info("plain", metadata: [
                "empty": "", "equals": "a=b", "quote": #"say "hi""#, "backslash": #"C:\dir"#, "quotedBackslash": #"a \ b"#,
                "newline": "one\ntwo", "tab": "a\tb", "bell": "\u{07}", "unicode": "grüße", "bare": "value-1.2:3/x",
            ])
        }
        let line = try #require(lines.first)
        let expected = #"level=info msg=plain backslash=C:\dir bare=value-1.2:3/x bell="\u0007" empty="" equals="a=b" newline="one\ntwo" provider=aws quote="say \"hi\"" quotedBackslash="a \\ b" tab="a\tb" unicode=grüße"#
        #expect(line.hasSuffix(" " + expected), "\(line)")
    }

    @Test func humanKeysAreSanitizedAndNeverRepeatTheLeadingKeys() throws {
        let lines = try Self.lines(format: .human) { logger in
            logger.info("keys", metadata: ["with space": "1", "a=b": "2", #"q"k"#: "3", "": "4", "msg": "5", "level": "6"])
        }
        let line = try #require(lines.first)
        let pairs = try #require(Logfmt.parse(line), "\(line)")
        #expect(pairs.map(\.key) == ["ts", "level", "msg", "_", "a_b", "meta.level", "meta.msg", "provider", "q_k", "with_space"])
        #expect(pairs.filter { $0.key == "msg" }.map(\.value) == ["keys"])
    }

    /// Every line parses back (with the small parser below, not the
    /// one the code ships) to the same keys and values.
    @Test func humanLinesRoundTripThroughALogfmtParser() throws {
        let awkward = ["", " ", "=", "\"", "\\", "\\\"", "a b=c", "line\nbreak\r\n", "tab\t", "\u{01}\u{1F}\u{7F}", "ünï cödé", "x=\"y\"", "trailing\\"]
        var expected: [[(String, String)]] = []
        let lines = try Self.lines(format: .human) { logger in
            for (index, value) in awkward.enumerated() {
                logger.notice("\(value)", metadata: ["value": "\(value)", "index": "\(index)"])
                expected.append([("level", "notice"), ("msg", value), ("index", "\(index)"), ("provider", "aws"), ("value", value)])
            }
        }
        #expect(lines.count == awkward.count)
        for (line, want) in zip(lines, expected) {
            let pairs = try #require(Self.parseLogfmt(line), "\(line)")
            #expect(pairs.first?.0 == "ts")
            let got = pairs.dropFirst()
            #expect(got.map(\.0) == want.map(\.0), "\(line)")
            #expect(got.map(\.1) == want.map(\.1), "\(line)")
        }
    }

    /// A minimal logfmt reader as the Go tools read it: bare values end at
    /// a space; quoted values are JSON-style strings.
    static func parseLogfmt(_ line: String) -> [(String, String)]? {
        var pairs: [(String, String)] = []
        var rest = Substring(line)
        while !rest.isEmpty {
            guard let equals = rest.firstIndex(of: "=") else { return nil }
            let key = String(rest[..<equals])
            guard !key.isEmpty, !key.contains(" "), !key.contains("\"") else { return nil }
            rest = rest[rest.index(after: equals)...]
            if rest.first == "\"" {
                // The closing quote is the first one not escaped.
                var end = rest.index(after: rest.startIndex)
                var escaped = false
                while end < rest.endIndex, escaped || rest[end] != "\"" {
                    escaped = !escaped && rest[end] == "\\"
                    end = rest.index(after: end)
                }
                guard end < rest.endIndex else { return nil }
                let literal = String(rest[...end])
                guard let value = try? JSONDecoder().decode(String.self, from: Data(literal.utf8)) else { return nil }
                pairs.append((key, value))
                rest = rest[rest.index(after: end)...]
            } else {
                let end = rest.firstIndex(of: " ") ?? rest.endIndex
                pairs.append((key, String(rest[..<end])))
                rest = rest[end...]
            }
            guard rest.isEmpty || rest.first == " " else { return nil }
            rest = rest.drop { $0 == " " }
        }
        return pairs
    }

    @Test func shippedParserReadsWhatTheHandlerWrites() throws {
        let value = "a \"b\"\n\\c=\u{02}"
        let lines = try Self.lines(format: .human) { logger in logger.error("m", metadata: ["v": "\(value)"]) }
        let line = try #require(lines.first)
        let pairs = try #require(Logfmt.parse(line))
        #expect(pairs.map(\.key) == ["ts", "level", "msg", "provider", "v"])
        #expect(pairs.last?.value == value)
        #expect(Logfmt.parse("ts=1 bare-word") == nil)
        #expect(Logfmt.parse(#"k="unterminated"#) == nil)
    }


    @Test func jsonLinesAreOneObjectEach() throws {
        let lines = try Self.lines(format: .json) { logger in
            logger.error("bad \"quote\"\nand newline", metadata: ["why": "x"])
        }
        #expect(lines.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: String])
        #expect(object["level"] == "error")
        #expect(object["label"] == "instancepoller")
        #expect(object["message"] == "bad \"quote\"\nand newline")
        #expect(object["provider"] == "aws")
        #expect(object["why"] == "x")
        #expect(object["time"]?.hasSuffix("Z") == true)
    }
}
