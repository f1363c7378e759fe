public import Foundation
#if canImport(FoundationXML)
internal import FoundationXML
#endif

/// A parsed XML document as a small tree: enough to read a cloud's answers
/// (EC2's Query API, vSphere's SOAP). Immutable once parsed.
public final class XMLTree: @unchecked Sendable {
    public let name: String
    public fileprivate(set) var text = ""
    public fileprivate(set) var children: [XMLTree] = []

    public init(name: String) { self.name = name }

    /// The first child named `name`.
    public func child(_ name: String) -> XMLTree? { children.first { $0.name == name } }

    /// Follows a path of child names: `node["instanceState", "name"]`.
    public subscript(_ path: String...) -> XMLTree? {
        var node: XMLTree? = self
        for name in path { node = node?.child(name) }
        return node
    }

    /// The text at a path, or "" when absent.
    public func string(_ path: String...) -> String {
        var node: XMLTree? = self
        for name in path { node = node?.child(name) }
        return node?.text.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    /// The `item` children of the set at `path` (EC2's list encoding).
    public func items(_ path: String...) -> [XMLTree] {
        var node: XMLTree? = self
        for name in path { node = node?.child(name) }
        return node?.children.filter { $0.name == "item" } ?? []
    }

    /// Every element named `name` in this subtree, depth first.
    public func all(named name: String) -> [XMLTree] {
        var found: [XMLTree] = []
        var stack: [XMLTree] = [self]
        while let node = stack.popLast() {
            if node.name == name { found.append(node) }
            stack.append(contentsOf: node.children.reversed())
        }
        return found
    }

    /// Parses `data`; nil when it is not well-formed XML.
    public static func parse(_ data: Data) -> XMLTree? {
        let builder = Builder()
        let parser = XMLParser(data: data)
        parser.delegate = builder
        parser.shouldProcessNamespaces = true
        guard parser.parse(), let root = builder.root else { return nil }
        return root
    }

    private final class Builder: NSObject, XMLParserDelegate {
        var root: XMLTree?
        var stack: [XMLTree] = []

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
            let node = XMLTree(name: elementName)
            if let parent = stack.last { parent.children.append(node) } else { root = node }
            stack.append(node)
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
            _ = stack.popLast()
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            stack.last?.text += string
        }
    }
}
