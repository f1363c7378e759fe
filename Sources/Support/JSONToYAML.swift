internal import Yams

/// JSON text rewritten as block-style YAML with the same fields and values
/// (`--format yaml`): key order is kept; a string is written plain only
/// when a YAML reader would read it back as that string (not `yes`, `1`,
/// `null`, …), else quoted; numbers, booleans and null stay what they are.
public enum JSONToYAML {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// One JSON value (an object, usually) as a YAML document, ending with
    /// a newline.
    public static func document(_ json: String) throws(Failure) -> String {
        let root: Node?
        do {
            root = try Yams.compose(yaml: json)
        } catch {
            throw Failure(description: "cannot read the answer as JSON: \(error)")
        }
        guard let root else { throw Failure(description: "the answer is empty") }
        do {
            return try Yams.serialize(node: block(root), width: -1, allowUnicode: true)
        } catch {
            throw Failure(description: "cannot write the answer as YAML: \(error)")
        }
    }

    /// One JSON value as an item of a block sequence (`- key: value` with
    /// the rest indented), for listings printed as they arrive.
    public static func sequenceItem(_ json: String) throws(Failure) -> String {
        let lines = try document(json).split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        return lines.enumerated().map { index, line in (index == 0 ? "- " : "  ") + line }.joined(separator: "\n") + "\n"
    }

    /// The node with block collections, and each string scalar plain only
    /// where plain reads back as the same string.
    static func block(_ node: Node) -> Node {
        switch node {
        case .mapping(let mapping):
            return .mapping(Node.Mapping(mapping.map { (block($0.key), block($0.value)) }, .implicit, .block))
        case .sequence(let sequence):
            return .sequence(Node.Sequence(sequence.map(block), .implicit, .block))
        case .scalar(let scalar):
            guard scalar.style == .doubleQuoted || scalar.style == .singleQuoted else {
                // A JSON number, true, false or null: plain, as it was.
                return .scalar(Node.Scalar(scalar.string, .implicit, .plain))
            }
            let plain = Node.Scalar(scalar.string, .implicit, .plain)
            let readsAsString = !scalar.string.isEmpty && Resolver.default.resolveTag(of: .scalar(plain)) == .str
            return .scalar(Node.Scalar(scalar.string, .implicit, readsAsString ? .any : .doubleQuoted))
        case .alias:
            return node
        }
    }
}
