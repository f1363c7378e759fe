public import NIOCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process at the other end of a Unix socket, from `SO_PEERCRED`.
///
/// Field order and sizes match Linux's `struct ucred`, which the kernel
/// fills in directly.
public struct PeerCredentials: Hashable, Sendable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    public var description: String { "pid \(pid) uid \(uid)" }

    /// Reads the peer of a connected Unix socket channel.
    public static func of(_ channel: any Channel) -> EventLoopFuture<PeerCredentials> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeFailedFuture(
                RPCError(.internal, "cannot read SO_PEERCRED: the channel is not a socket")
            )
        }
        #if os(Linux)
        return provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        #else
        return channel.eventLoop.makeFailedFuture(RPCError(.unimplemented, "SO_PEERCRED is Linux-only"))
        #endif
    }
}

/// Who may connect, checked on both sides of every connection.
public struct PeerPolicy: Sendable {
    private let allows: @Sendable (PeerCredentials) -> Bool
    public let summary: String

    public init(summary: String, allows: @escaping @Sendable (PeerCredentials) -> Bool) {
        self.summary = summary
        self.allows = allows
    }

    public func allows(_ peer: PeerCredentials) -> Bool { allows(peer) }

    /// The contract's rule: the same uid as this process, or root.
    public static let sameUserOrRoot = PeerPolicy(
        sameUserAs: getuid()
    )

    /// The same uid as `uid`, or root.
    public init(sameUserAs uid: UInt32) {
        self.init(summary: "uid \(uid) or root") { peer in peer.uid == uid || peer.uid == 0 }
    }
}
