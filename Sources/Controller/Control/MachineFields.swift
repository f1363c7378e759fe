internal import Core
internal import Support

/// The rules for a machine's fields, the same wherever a machine comes in:
/// `AddMachine`, `AddMachines` and `instancepoller machines import`. Each
/// check answers nil when the value is fine, else the problem in words
/// (without the field's name), quoting at most the value's first 64
/// characters, escaped.
public enum MachineFields {
    /// The longest machine id.
    public static let maxIDLength = 256
    /// The longest instance id.
    public static let maxInstanceIDLength = 256

    public static func idProblem(_ id: String) -> String? {
        if id.isEmpty { return "a machine id is needed" }
        let characters = "letters, digits, '-', '_', '.', '/' and ':'"
        if id.utf8.count > maxIDLength {
            return "machine ids are at most \(maxIDLength) characters (got \(id.count))"
        }
        guard id.unicodeScalars.allSatisfy(isIDScalar) else {
            return "machine ids use \(characters) (got \(quoted(id)))"
        }
        return nil
    }

    /// Empty is fine: the machine is not provisioned yet.
    public static func instanceIDProblem(_ instanceID: String) -> String? {
        if instanceID.utf8.count > maxInstanceIDLength {
            return "instance ids are at most \(maxInstanceIDLength) characters (got \(instanceID.count))"
        }
        // Printable ASCII without a space, as cloud ids are: no need to ask Unicode.
        if instanceID.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) { return nil }
        if instanceID.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.properties.generalCategory == .control }) {
            return "instance ids hold no spaces or control characters (got \(quoted(instanceID)))"
        }
        return nil
    }

    /// Provider and credential names: plain words.
    public static func nameProblem(_ name: String, what: String) -> String? {
        if name.isEmpty { return "a \(what) name is needed" }
        if name.utf8.count > maxIDLength || !name.unicodeScalars.allSatisfy(isNameScalar) {
            return "\(what) names are 1 to \(maxIDLength) letters, digits, '-', '_' and '.' (got \(quoted(name)))"
        }
        return nil
    }

    /// Empty is fine: none (agentless).
    public static func agentStatus(_ text: String) -> Result<Machine.AgentStatus, AgentStatusProblem> {
        if text.isEmpty { return .success(.none) }
        guard let status = Machine.AgentStatus(rawValue: text) else {
            return .failure(AgentStatusProblem(description:
                "unknown agent status \(quoted(text)) (expected one of: \(Machine.AgentStatus.allCases.map(\.rawValue).joined(separator: ", ")))"))
        }
        return .success(status)
    }

    public struct AgentStatusProblem: Error, CustomStringConvertible {
        public var description: String
    }

    /// `"value"` with quotes, backslashes and control characters escaped, cut
    /// to 64 characters (…) so that a problem stays one short line.
    public static func quoted(_ text: String) -> String {
        TextEscaping.quoted(text, limit: 64)
    }

    static func isIDScalar(_ scalar: Unicode.Scalar) -> Bool {
        isNameScalar(scalar) || scalar == "/" || scalar == ":"
    }

    static func isNameScalar(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) || "-_.".unicodeScalars.contains(scalar)
    }
}
