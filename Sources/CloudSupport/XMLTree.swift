public import Foundation
#if canImport(FoundationXML)
internal import FoundationXML
#endif

/// A parsed XML document as a small tree: enough to read a cloud's answers
/// (EC2's Query API, vSphere's SOAP). Immutable once parsed.
///
/// Element names are local names (namespaces processed); attributes keep
/// their names as written, prefix included (`xsi:type`, `type`).
public final class XMLTree: @unchecked Sendable {
    public let name: String
    public fileprivate(set) var text = ""
    public fileprivate(set) var children: [XMLTree] = []
    public fileprivate(set) var attributes: [String: String] = [:]
    /// The element's `xsi:type` (an attribute `type` in the XML Schema
    /// instance namespace, whatever its prefix), without the value's own
    /// prefix: `xsi:type="xsd:string"` gives "string". Nil when absent.
    public fileprivate(set) var xsiType: String?

    /// Elements nested deeper than this make a document unreadable (a
    /// cloud's answers are a few dozen levels deep).
    public static let maxDepth = 128

    public init(name: String) { self.name = name }

    /// The attribute named `name` as written, e.g. `xsi:type`.
    public func attribute(_ name: String) -> String? { attributes[name] }

    static let schemaInstanceNamespace = "http://www.w3.org/2001/XMLSchema-instance"

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

    /// Why a document was not read: what ``read(_:)`` throws.
    public struct Unreadable: Error, Sendable, Hashable, CustomStringConvertible {
        /// What is wrong, e.g. "is not UTF-8"; reads after "the answer".
        public var problem: String
        public var description: String { problem }
        init(_ problem: String) { self.problem = problem }
    }

    /// Parses `data`; nil when ``read(_:)`` refuses it.
    public static func parse(_ data: Data) -> XMLTree? {
        try? read(data)
    }

    /// Parses `data`, or says why not: it is not well-formed XML (cut short
    /// included), is not UTF-8 or holds a NUL (clouds answer in UTF-8),
    /// declares another encoding, holds a processing instruction or a
    /// document type (no answer of a cloud does; refusing them keeps entity
    /// expansion out), or nests elements deeper than ``maxDepth``.
    public static func read(_ data: Data) throws(Unreadable) -> XMLTree {
        // Foundation's XMLParser on Linux traps on an element name that is
        // not UTF-8, on a processing instruction without data such as
        // `<?pi?>` (scripts/fuzz found both; Fuzz/regressions/vsphere-soap
        // and ec2-xml), and on element, attribute list and notation
        // declarations: only UTF-8 without a processing instruction (the
        // XML declaration aside) or a document type reaches it.
        guard isUTF8WithoutNUL(data) else { throw Unreadable("is not UTF-8") }
        try screenMarkup(data)
        let builder = Builder()
        let parser = XMLParser(data: data)
        parser.delegate = builder
        parser.shouldProcessNamespaces = true
        parser.shouldReportNamespacePrefixes = true
        parser.shouldResolveExternalEntities = false
        // On Linux, parse() also says true for a document cut short (or
        // with more after its root element), setting parserError: a
        // truncated answer must not read as a shorter one.
        let parsed = parser.parse()
        if builder.refused { throw Unreadable("nests elements deeper than \(maxDepth) levels") }
        guard parsed, parser.parserError == nil, builder.stack.isEmpty, let root = builder.root else {
            throw Unreadable("is not XML")
        }
        return root
    }

    /// Refuses an XML declaration of an encoding other than UTF-8, any
    /// other processing instruction (`<?` anywhere but in the declaration
    /// at the very start, after a byte order mark) and any declaration
    /// (`<!` that opens neither a comment nor a CDATA section).
    static func screenMarkup(_ data: Data) throws(Unreadable) {
        let bytes = [UInt8](data)
        var start = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        // The declaration is `<?xml` and white space; `<?xmlfoo?>` is an
        // instruction like any other.
        if bytes.count >= start + 6, bytes[start..<start + 5].elementsEqual("<?xml".utf8), [0x20, 0x09, 0x0A, 0x0D].contains(bytes[start + 5]) {
            // It ends at the first "?>", and holds no markup before it: a
            // declaration never closed would hide what follows it
            // (`<?xml v><a/><?pi?>`, found by scripts/fuzz ec2-xml).
            var end = start + 6
            while end + 1 < bytes.count, !(bytes[end] == UInt8(ascii: "?") && bytes[end + 1] == UInt8(ascii: ">")) {
                guard bytes[end] != UInt8(ascii: "<"), bytes[end] != UInt8(ascii: ">") else { throw Unreadable("has a malformed XML declaration") }
                end += 1
            }
            guard end + 1 < bytes.count else { throw Unreadable("has a malformed XML declaration") }
            let declaration = String(decoding: bytes[start..<min(end, bytes.count)], as: UTF8.self)
            if let encoding = declaredEncoding(declaration), !["utf-8", "utf8"].contains(encoding.lowercased()) {
                let shown = String(encoding.unicodeScalars.prefix(40).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? Character($0) : "?" })
                throw Unreadable("declares the encoding \"\(shown)\", not UTF-8")
            }
            start = end + 2
        }
        var index = start
        while index + 1 < bytes.count {
            if bytes[index] == UInt8(ascii: "<") {
                if bytes[index + 1] == UInt8(ascii: "?") { throw Unreadable("has a processing instruction other than the XML declaration") }
                if bytes[index + 1] == UInt8(ascii: "!"), !bytes[index...].starts(with: "<!--".utf8), !bytes[index...].starts(with: "<![CDATA[".utf8) {
                    throw Unreadable("has a document type or other declaration")
                }
            }
            index += 1
        }
    }

    /// The `encoding` of an XML declaration (`<?xml version="1.0"
    /// encoding="UTF-8"`), if it names one.
    static func declaredEncoding(_ declaration: String) -> String? {
        guard let key = declaration.range(of: "encoding") else { return nil }
        let rest = declaration[key.upperBound...].drop { $0 == " " || $0 == "=" || $0 == "\t" || $0 == "\r" || $0 == "\n" }
        guard let quote = rest.first, quote == "\"" || quote == "'" else { return "" }
        return String(rest.dropFirst().prefix { $0 != quote })
    }

    static func isUTF8WithoutNUL(_ data: Data) -> Bool {
        var bytes = data.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&bytes) {
            case .scalarValue(let scalar): if scalar.value == 0 { return false }
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    private final class Builder: NSObject, XMLParserDelegate {
        var root: XMLTree?
        var stack: [XMLTree] = []
        var refused = false
        /// Namespace URIs by prefix, innermost last.
        var prefixes: [String: [String]] = [:]

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
            guard stack.count < XMLTree.maxDepth else {
                refused = true
                parser.abortParsing()
                return
            }
            let node = XMLTree(name: elementName)
            node.attributes = attributes
            for (name, value) in attributes {
                guard let colon = name.firstIndex(of: ":"), name[name.index(after: colon)...] == "type" else { continue }
                let prefix = String(name[..<colon])
                guard (prefixes[prefix]?.last ?? (prefix == "xsi" ? XMLTree.schemaInstanceNamespace : nil)) == XMLTree.schemaInstanceNamespace else {
                    continue
                }
                let trimmed = value.trimmingCharacters(in: .whitespaces)
                node.xsiType = trimmed.lastIndex(of: ":").map { String(trimmed[trimmed.index(after: $0)...]) } ?? trimmed
            }
            if let parent = stack.last { parent.children.append(node) } else { root = node }
            stack.append(node)
        }

        func parser(_ parser: XMLParser, didStartMappingPrefix prefix: String, toURI namespaceURI: String) {
            prefixes[prefix, default: []].append(namespaceURI)
        }

        func parser(_ parser: XMLParser, didEndMappingPrefix prefix: String) {
            _ = prefixes[prefix]?.popLast()
        }

        func parser(_ parser: XMLParser, foundCDATA CDATABlock: Data) {
            stack.last?.text += String(decoding: CDATABlock, as: UTF8.self)
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
            _ = stack.popLast()
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            stack.last?.text += string
        }
    }
}
