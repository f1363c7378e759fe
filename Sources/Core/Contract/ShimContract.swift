/// The shim process contract's constants, written once for the controller,
/// the shim SDK and the tests (proto/PROTOCOL.md, "The shim process
/// contract").
public enum ShimContract {
    /// The environment variable naming the socket a shim listens on.
    public static let socketVariable = "INSTANCEPOLLER_SOCKET"

    /// The handshake line's first field.
    public static let handshakeTag = "instancepoller-shim"
    /// The handshake line's format version (its second field).
    public static let handshakeVersion = 1
    /// The only network a shim may name (third field).
    public static let handshakeNetwork = "unix"
    /// The only protocol a shim may name (fifth field).
    public static let handshakeProtocol = "ttrpc"

    /// The one line a shim prints on stdout once it listens on `socketPath`:
    /// `instancepoller-shim|1|unix|/path/to/provider.sock|ttrpc`.
    public static func handshakeLine(socketPath: String) -> String {
        "\(handshakeTag)|\(handshakeVersion)|\(handshakeNetwork)|\(socketPath)|\(handshakeProtocol)"
    }

    /// A handshake line that is not the one expected, with what is wrong.
    public struct HandshakeLineError: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Checks a shim's handshake line against the socket the shim was told to
    /// listen on. The path may itself contain `|`: the line is read as tag,
    /// version and network from the front, the protocol from the back, and
    /// the path in between.
    public static func checkHandshakeLine(_ line: String, socketPath: String) -> HandshakeLineError? {
        let fields = line.split(separator: "|", omittingEmptySubsequences: false)
        guard fields.count >= 5 else {
            return HandshakeLineError(description: "bad handshake line \"\(line)\": \(fields.count) fields, expected 5 (\"\(handshakeLine(socketPath: socketPath))\")")
        }
        if fields[0] != handshakeTag {
            return HandshakeLineError(description: "bad handshake line \"\(line)\": it must start with \"\(handshakeTag)\"")
        }
        if fields[1] != "\(handshakeVersion)" {
            return HandshakeLineError(description: "bad handshake line \"\(line)\": handshake version \"\(fields[1])\", this controller speaks \(handshakeVersion)")
        }
        if fields[2] != handshakeNetwork {
            return HandshakeLineError(description: "bad handshake line \"\(line)\": network \"\(fields[2])\", only \"\(handshakeNetwork)\" is supported")
        }
        if fields[fields.count - 1] != handshakeProtocol {
            return HandshakeLineError(description: "bad handshake line \"\(line)\": protocol \"\(fields[fields.count - 1])\", only \"\(handshakeProtocol)\" is supported")
        }
        let path = fields[3..<(fields.count - 1)].joined(separator: "|")
        if path != socketPath {
            return HandshakeLineError(description: "bad handshake line \"\(line)\": socket \(path), but the shim was given \(socketPath)")
        }
        return nil
    }
}

/// The product's version, shown by `--version` of both executables and
/// reported by the built-in backends and the controller.
public enum ProductVersion {
    public static let current = "0.1.0"
}
