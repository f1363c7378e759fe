/// logfmt, the `key=value` line format that logfmt tools (`hl`, `lnav`,
/// Grafana Loki's `| logfmt`, go-logfmt) read: pairs separated by spaces;
/// a value is written bare unless it is empty or holds a space, `=`, `"`
/// or a control character, then it is quoted with `\\`, `\"`, `\n`, `\r`,
/// `\t` and `\u00XX` escapes. A key is never quoted, so a key that holds
/// such a character is written with `_` in its place.
public enum Logfmt {
    /// `key=value`, encoded.
    public static func pair(_ key: String, _ value: String) -> String {
        "\(self.key(key))=\(self.value(value))"
    }

    /// A key as logfmt allows it: no space, `=`, `"` or control
    /// character (each becomes `_`); an empty key is `_`.
    public static func key(_ key: String) -> String {
        guard !key.isEmpty else { return "_" }
        guard key.unicodeScalars.contains(where: needsQuoting) else { return key }
        return String(String.UnicodeScalarView(key.unicodeScalars.map { needsQuoting($0) ? "_" : $0 }))
    }

    /// A value, quoted and escaped when it must be.
    public static func value(_ value: String) -> String {
        guard value.isEmpty || value.unicodeScalars.contains(where: needsQuoting) else { return value }
        var quoted = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": quoted += "\\\\"
            case "\"": quoted += "\\\""
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F || (0x80..<0xA0).contains(scalar.value):
                let hex = String(scalar.value, radix: 16)
                quoted += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    /// As go-logfmt: at or below a space, `=`, `"`, DEL and the C1 controls.
    static func needsQuoting(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value <= 0x20 || scalar == "=" || scalar == "\"" || scalar.value == 0x7F || (0x80..<0xA0).contains(scalar.value)
    }

    /// The pairs of a logfmt line, in order; nil when it is not logfmt (a
    /// bare word without `=`, an unterminated quote, a bad escape).
    public static func parse(_ line: String) -> [(key: String, value: String)]? {
        var pairs: [(key: String, value: String)] = []
        var scalars = Substring(line).unicodeScalars[...]
        func skipSpaces() { while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() } }
        skipSpaces()
        while !scalars.isEmpty {
            var key = ""
            while let first = scalars.first, !needsQuoting(first) {
                key.unicodeScalars.append(first)
                scalars.removeFirst()
            }
            guard !key.isEmpty, scalars.first == "=" else { return nil }
            scalars.removeFirst()
            var value = ""
            if scalars.first == "\"" {
                scalars.removeFirst()
                var closed = false
                while let scalar = scalars.popFirst() {
                    if scalar == "\"" {
                        closed = true
                        break
                    }
                    guard scalar == "\\" else {
                        value.unicodeScalars.append(scalar)
                        continue
                    }
                    guard let escaped = scalars.popFirst() else { return nil }
                    switch escaped {
                    case "\\", "\"", "/": value.unicodeScalars.append(escaped)
                    case "n": value += "\n"
                    case "r": value += "\r"
                    case "t": value += "\t"
                    case "u":
                        let hex = String(String.UnicodeScalarView(scalars.prefix(4)))
                        guard hex.count == 4, let code = UInt32(hex, radix: 16), let decoded = Unicode.Scalar(code) else { return nil }
                        scalars.removeFirst(4)
                        value.unicodeScalars.append(decoded)
                    default: return nil
                    }
                }
                guard closed else { return nil }
            } else {
                while let first = scalars.first, !needsQuoting(first) {
                    value.unicodeScalars.append(first)
                    scalars.removeFirst()
                }
            }
            guard scalars.isEmpty || scalars.first == " " || scalars.first == "\t" else { return nil }
            pairs.append((key, value))
            skipSpaces()
        }
        return pairs
    }
}
