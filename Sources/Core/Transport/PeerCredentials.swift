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

extension PeerCredentials {
    /// The uids of a running process, from `/proc/<pid>/status`.
    public struct ProcessUIDs: Hashable, Sendable {
        public var real: UInt32
        public var effective: UInt32

        public init(real: UInt32, effective: UInt32) {
            self.real = real
            self.effective = effective
        }
    }

    /// The real and effective uid of process `pid` now; nil when it is gone
    /// (or its status cannot be read).
    public static func currentUIDs(ofProcess pid: Int32) -> ProcessUIDs? {
        guard pid > 0 else { return nil }
        // The Uid line is within the first ~600 bytes of the file.
        guard let bytes = ProcessAncestry.readProcFile(pid, "status", upTo: 2048) else { return nil }
        return parseUIDs(status: bytes)
    }

    /// The `Uid:` line of a `/proc/<pid>/status` text: real, effective,
    /// saved and filesystem uids. Parsed as bytes, not as a String: where
    /// no pidfd can answer (see ``PeerProcess``) this runs before every
    /// request.
    static func parseUIDs(status: ArraySlice<UInt8>) -> ProcessUIDs? {
        let prefix = "Uid:".utf8
        for line in status.split(separator: UInt8(ascii: "\n")) where line.starts(with: prefix) {
            let fields = line.dropFirst(prefix.count)
                .split(whereSeparator: { $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: " ") })
                .compactMap { UInt32(String(decoding: $0, as: UTF8.self)) }
            guard fields.count >= 2 else { return nil }
            return ProcessUIDs(real: fields[0], effective: fields[1])
        }
        return nil
    }

    /// Why this peer may no longer call, checked again before each request:
    /// its credentials were taken at connect, but the process may since
    /// have exited (and the descriptor passed on) or changed uid. Nil: it
    /// is still allowed.
    public func recheck(against policy: PeerPolicy) -> String? {
        recheck(against: policy, uids: Self.currentUIDs(ofProcess: pid))
    }

    /// ``recheck(against:)`` with the peer's uids now, read by the caller
    /// (nil: the process is gone).
    func recheck(against policy: PeerPolicy, uids: ProcessUIDs?) -> String? {
        guard let uids else {
            return "peer process \(pid) is gone"
        }
        for (name, uid) in [("real", uids.real), ("effective", uids.effective)]
        where !policy.allows(PeerCredentials(pid: pid, uid: uid, gid: gid)) {
            return "peer process \(pid) now runs with \(name) uid \(uid), not \(policy.summary)"
        }
        return nil
    }
}
