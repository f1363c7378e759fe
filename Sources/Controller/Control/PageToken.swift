internal import Foundation

/// The opaque `page_token` of a paged control call: where the next page
/// starts, sealed with a key that lives only in this controller process.
///
/// A token is valid only for the call and the filters it was issued for,
/// and only until the controller restarts: anything else (forged, cut,
/// from another listing or an earlier process) is refused, never followed
/// to a wrong page. The seal is a 128-bit keyed hash (two SipHash runs of
/// the standard library's `Hasher`, keyed with 32 random bytes drawn at
/// start), which is about integrity, not secrecy: the cursor itself (the
/// last id or revision) is readable.
///
/// Layout before base64url: version (1 byte), cursor (the rest), seal (16
/// bytes).
struct PageToken {
    /// What a token pages through, bound into its seal.
    enum Listing: UInt8 {
        case machines = 1
        case events = 2
    }

    static let version: UInt8 = 1
    /// Longest cursor: a machine id is at most 256 bytes.
    static let maxCursorBytes = 512

    /// Drawn once per process.
    private static let key: [UInt64] = {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in generator.next() }
    }()

    /// A token for the page after `cursor`, for this listing and `scope`
    /// (the request's filters in a canonical spelling).
    static func issue(_ listing: Listing, scope: String, cursor: [UInt8]) -> String {
        var bytes = [version]
        bytes += cursor
        bytes += seal(listing, scope: scope, body: bytes)
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// The cursor in `token`, or nil when this process did not issue it
    /// for this listing and scope.
    static func cursor(of token: String, _ listing: Listing, scope: String) -> [UInt8]? {
        guard token.utf8.count <= (maxCursorBytes + 17) * 4 / 3 + 4 else { return nil }
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !base64.contains("=") else { return nil }
        base64 += String(repeating: "=", count: (4 - base64.utf8.count % 4) % 4)
        guard let data = Data(base64Encoded: base64), data.count >= 17 else { return nil }
        let bytes = [UInt8](data)
        let body = Array(bytes.dropLast(16))
        guard body[0] == version, constantTimeEqual(seal(listing, scope: scope, body: body), Array(bytes.suffix(16))) else { return nil }
        return Array(body.dropFirst())
    }

    private static func seal(_ listing: Listing, scope: String, body: [UInt8]) -> [UInt8] {
        var seal: [UInt8] = []
        for half in 0..<2 {
            var hasher = Hasher()
            hasher.combine(key[half * 2])
            hasher.combine(key[half * 2 + 1])
            hasher.combine(listing.rawValue)
            hasher.combine(scope)
            hasher.combine(body.count)
            body.withUnsafeBytes { hasher.combine(bytes: $0) }
            let value = UInt64(bitPattern: Int64(hasher.finalize()))
            seal += (0..<8).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
        }
        return seal
    }

    private static func constantTimeEqual(_ left: [UInt8], _ right: [UInt8]) -> Bool {
        guard left.count == right.count else { return false }
        return zip(left, right).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
