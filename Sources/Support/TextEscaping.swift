/// Text from outside (a file's value, a parser's report, an id) shown in a
/// one-line message: control characters escaped so that the message stays
/// one line and prints nothing it should not.
public enum TextEscaping {
    /// `text` with each control character escaped (`\n`, `\t`, `\r`,
    /// `\u{1b}`); unchanged when it has none.
    public static func oneLine(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var escaped = ""
        for scalar in text.unicodeScalars { append(scalar, to: &escaped) }
        return escaped
    }

    /// `"text"`, with quotes and backslashes escaped too, cut to `limit`
    /// characters (then "…") so that a problem quoting it stays short.
    public static func quoted(_ text: String, limit: Int = .max) -> String {
        var shown = "\""
        var count = 0
        for scalar in text.unicodeScalars {
            if count == limit {
                shown += "…"
                break
            }
            count += 1
            switch scalar {
            case "\"": shown += "\\\""
            case "\\": shown += "\\\\"
            default: append(scalar, to: &shown)
            }
        }
        return shown + "\""
    }

    /// `text` as a JSON string literal: quotes, backslashes and the control
    /// characters JSON forbids escaped (`\n`, `\r`, `\t`, else `\u00XX`).
    public static func json(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20:
                let hex = String(c.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.generalCategory == .control
    }

    private static func append(_ scalar: Unicode.Scalar, to text: inout String) {
        switch scalar {
        case "\n": text += "\\n"
        case "\t": text += "\\t"
        case "\r": text += "\\r"
        case _ where isControl(scalar): text += "\\u{\(String(scalar.value, radix: 16))}"
        default: text.unicodeScalars.append(scalar)
        }
    }
}
