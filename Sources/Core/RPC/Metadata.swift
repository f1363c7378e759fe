/// Key-value pairs sent with a request (ttrpc `Request.metadata`) or a
/// response (the instancepoller `Response.metadata` extension).
///
/// Keys may repeat; order is kept. Keys are compared case-sensitively, as
/// ttrpc does.
public struct Metadata: Hashable, Sendable, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral,
    RandomAccessCollection, CustomStringConvertible
{
    public struct Entry: Hashable, Sendable {
        public var key: String
        public var value: String
        public init(key: String, value: String) {
            self.key = key
            self.value = value
        }
    }

    public private(set) var entries: [Entry]

    public init() { self.entries = [] }
    public init(_ entries: [Entry]) { self.entries = entries }
    public init(arrayLiteral elements: (String, String)...) {
        self.entries = elements.map { Entry(key: $0.0, value: $0.1) }
    }
    public init(dictionaryLiteral elements: (String, String)...) {
        self.entries = elements.map { Entry(key: $0.0, value: $0.1) }
    }

    public var startIndex: Int { entries.startIndex }
    public var endIndex: Int { entries.endIndex }
    public subscript(position: Int) -> Entry { entries[position] }

    /// Every value for `key`, in order.
    public subscript(key: String) -> [String] {
        entries.lazy.filter { $0.key == key }.map(\.value)
    }

    /// The first value for `key`.
    public func first(_ key: String) -> String? {
        entries.first { $0.key == key }?.value
    }

    public mutating func append(_ key: String, _ value: String) {
        entries.append(Entry(key: key, value: value))
    }

    public mutating func append(_ entry: Entry) {
        entries.append(entry)
    }

    public mutating func removeAll(_ key: String) {
        entries.removeAll { $0.key == key }
    }

    /// Keys only: values may be secrets and are never printed.
    public var description: String {
        "[" + entries.map(\.key).joined(separator: ", ") + "]"
    }
}
