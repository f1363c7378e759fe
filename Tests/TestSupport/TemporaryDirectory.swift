import Foundation

/// A private (0700) directory for one test's sockets and files, removed by
/// ``remove()``.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init() throws {
        // Short paths: a Unix socket path must fit in 107 bytes.
        var template = Array("/tmp/ip-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw CocoaError(.fileWriteUnknown)
        }
        path = String(cString: made)
    }

    public func file(_ name: String) -> String { "\(path)/\(name)" }

    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
