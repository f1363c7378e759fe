import Core
import Foundation
import Logging
import Testing
import TestSupport
import Support

/// Log lines as operators read them: human key=value or one JSON object.
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

    @Test func humanLinesQuoteValuesWithSpaces() throws {
        let lines = try Self.lines(format: .human) { logger in
            logger.warning("shim down", metadata: ["why": "exited with status 3", "pid": "42"])
            logger.debug("not shown below the level")
        }
        #expect(lines.count == 1)
        let line = try #require(lines.first)
        #expect(line.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z warning shim down pid=42 provider=aws why="exited with status 3"$"#, options: .regularExpression) != nil, "\(line)")
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
