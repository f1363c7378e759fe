public import Logging
internal import Foundation

/// Writes one line per log record to a file descriptor (stderr by default):
/// logfmt (`human`) or one JSON object per line.
///
/// Human (logfmt, see ``Logfmt``): `ts`, `level` and `msg` first, then the
/// metadata keys sorted, so that logfmt tools read every line:
/// `ts=2026-11-24T22:13:25.123Z level=warning msg="shim down" provider=aws why="exited with status 3"`
/// JSON:  `{"time":"2026-11-24T22:13:25.123Z","level":"warning","label":"instancepoller","message":"shim down","provider":"aws",...}`
///
/// Lines are written whole with one `write`, so lines of several threads
/// never interleave.
public struct LineLogHandler: LogHandler {
    public enum Format: String, Sendable {
        /// logfmt.
        case human, json
    }

    /// The keys a human line starts with; metadata under one of these names
    /// is written as `meta.<key>`, so no key appears twice.
    static let leadingKeys: Set<String> = ["ts", "level", "msg"]

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let format: Format
    private let output: Int32

    public init(label: String, level: Logger.Level = .info, format: Format = .human, fileDescriptor: Int32 = 2) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.output = fileDescriptor
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let time = Self.timestamp()
        var line: String
        switch format {
        case .human:
            line = "ts=\(time) level=\(event.level) \(Logfmt.pair("msg", "\(event.message)"))"
            for key in merged.keys.sorted() {
                line += " " + Logfmt.pair(Self.leadingKeys.contains(key) ? "meta.\(key)" : key, "\(merged[key]!)")
            }
        case .json:
            line = "{\"time\":\(TextEscaping.json(time)),\"level\":\(TextEscaping.json("\(event.level)")),\"label\":\(TextEscaping.json(label)),\"message\":\(TextEscaping.json("\(event.message)"))"
            for key in merged.keys.sorted() { line += ",\(TextEscaping.json(key)):\(TextEscaping.json("\(merged[key]!)"))" }
            line += "}"
        }
        line += "\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Foundation.write(output, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { return }
                offset += written
            }
        }
    }

    /// UTC with milliseconds, e.g. 2026-11-24T22:13:25.123Z.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(now.tv_nsec / 1_000_000), 3))Z"
    }
}
