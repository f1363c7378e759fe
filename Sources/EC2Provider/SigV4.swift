internal import Crypto
internal import Foundation

/// AWS credentials from a provider `Credential` (attributes `access-key`,
/// `secret-key`, optional `session-token`). The secret parts never appear
/// in a description, log or error.
struct AWSCredentials: Sendable, CustomStringConvertible {
    var accessKey: String
    var secretKey: String
    var sessionToken: String?

    var description: String { "AWS credentials (access key \(accessKey))" }

    /// Removes the secret key and the session token from `text`.
    func scrub(_ text: String) -> String {
        var text = text
        for secret in [secretKey, sessionToken ?? ""] where secret.count >= 4 {
            text = text.replacingOccurrences(of: secret, with: "[secret]")
        }
        return text
    }

    /// A stable, one-way fingerprint (for the validation cache).
    var fingerprint: String {
        let material = [accessKey, secretKey, sessionToken ?? ""].joined(separator: "\u{0}")
        return SHA256.hash(data: Data(material.utf8)).hex
    }
}

/// AWS Signature Version 4 for one request.
///
/// https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
enum SigV4 {
    /// Signs a request: returns the headers to send (the given ones plus
    /// `x-amz-date`, `x-amz-security-token` when there is a session token,
    /// and `authorization`).
    ///
    /// - Parameters:
    ///   - headers: lower-case names; must hold `host`.
    ///   - query: the canonical query string (already encoded and sorted).
    static func sign(
        method: String,
        path: String,
        query: String = "",
        headers: [String: String],
        payload: [UInt8],
        service: String,
        region: String,
        credentials: AWSCredentials,
        date: Date
    ) -> [String: String] {
        let amzDate = Self.amzDate(date)
        let day = String(amzDate.prefix(8))
        var signed = headers
        signed["x-amz-date"] = amzDate
        if let token = credentials.sessionToken, !token.isEmpty { signed["x-amz-security-token"] = token }
        let names = signed.keys.map { $0.lowercased() }.sorted()
        let canonicalHeaders = names.map { "\($0):\(signed[$0]!.trimmingCharacters(in: .whitespaces))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let canonicalRequest = [
            method, path, query, canonicalHeaders, signedHeaders, SHA256.hash(data: payload).hex,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, SHA256.hash(data: Data(canonicalRequest.utf8)).hex].joined(separator: "\n")
        var key = SymmetricKey(data: Data("AWS4\(credentials.secretKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        let signature = Data(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key)).hex
        signed["authorization"] = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKey)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
        return signed
    }

    /// 20150830T123600Z
    static func amzDate(_ date: Date) -> String {
        var time = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(
            format: "%04d%02d%02dT%02d%02d%02dZ",
            parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec
        )
    }

    /// Form-encodes query parameters the way SigV4 and EC2 expect
    /// (RFC 3986 unreserved characters kept, everything else %XX).
    static func formEncode(_ parameters: [(String, String)]) -> String {
        parameters.map { "\(percentEncode($0.0))=\(percentEncode($0.1))" }.joined(separator: "&")
    }

    static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }
}

extension Sequence where Element == UInt8 {
    var hex: String { map { String(format: "%02x", $0) }.joined() }
}

extension Digest {
    var hex: String { Array(self).hex }
}
