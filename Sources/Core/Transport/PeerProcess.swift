internal import NIOCore
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#endif

/// The process at the other end of one server connection, checked again
/// before its requests (see ``PeerCredentials/recheck(against:)``).
///
/// On Linux 6.13 and later the check asks the socket for a pidfd of its
/// peer (`SO_PEERPIDFD`) and the pidfd for the uids (`PIDFD_GET_INFO`):
/// some 2 µs, against some 7 µs to open and read `/proc/<pid>/status` and
/// many more to parse it as text. The socket holds the peer's `struct pid`,
/// so the pidfd is of the process that connected, even once its pid number
/// has been given to another. No descriptor is held between checks: a
/// connection costs one descriptor, as the connection caps assume. Where
/// the kernel cannot answer, each check reads `/proc/<pid>/status` as
/// ``PeerCredentials/currentUIDs(ofProcess:)`` does.
///
/// Used on the connection's event loop only.
final class PeerProcess {
    let credentials: PeerCredentials
    /// The connection's options, to ask its socket for a pidfd of the peer
    /// (synchronously, on the loop); nil when the channel is no socket.
    private let socket: (any NIOSynchronousChannelOptions)?
    /// Whether this kernel answers by pidfd (found out on the first check).
    private(set) var usesPIDFD: Bool

    /// Must be called on the channel's event loop.
    init(credentials: PeerCredentials, channel: any Channel) {
        self.credentials = credentials
        socket = channel is any SocketOptionProvider ? channel.syncOptions : nil
        usesPIDFD = Self.peerUIDs(socket) != .unsupported
    }

    /// The peer's real and effective uid now; nil when it is gone.
    func currentUIDs() -> PeerCredentials.ProcessUIDs? {
        if usesPIDFD {
            switch Self.peerUIDs(socket) {
            case .uids(let uids): return uids
            case .gone: return nil
            case .unsupported: break  // e.g. no descriptor free now: ask /proc
            }
        }
        return PeerCredentials.currentUIDs(ofProcess: credentials.pid)
    }

    /// Why the peer may no longer call (see ``PeerCredentials/recheck(against:)``); nil: it still may.
    func recheck(against policy: PeerPolicy) -> String? {
        credentials.recheck(against: policy, uids: currentUIDs())
    }

    // MARK: Linux ABI

    enum PIDFDAnswer: Hashable {
        case uids(PeerCredentials.ProcessUIDs)
        /// The process has exited.
        case gone
        /// The kernel cannot say (older than 6.13), or no pidfd could be made.
        case unsupported
    }

    /// `SO_PEERPIDFD` (Linux 6.5), not in every libc's headers yet.
    static let soPeerPIDFD: CInt = 77

    /// The uids of the process at the other end of a socket, by a pidfd
    /// from `SO_PEERPIDFD`, closed again before returning.
    static func peerUIDs(_ socket: (any NIOSynchronousChannelOptions)?) -> PIDFDAnswer {
        #if os(Linux)
        guard let socket else { return .unsupported }
        let pidfd: CInt
        do {
            // Read into an Int (NIO's SocketOptionValue), zeroed first.
            let value = try socket.getOption(ChannelOptions.socketOption(NIOBSDSocket.Option(rawValue: soPeerPIDFD)))
            pidfd = CInt(truncatingIfNeeded: value)
        } catch let error as IOError where error.errnoCode == ESRCH || error.errnoCode == EINVAL {
            // Before Linux 6.16 the kernel makes no pidfd of an exited peer.
            return .gone
        } catch {
            return .unsupported
        }
        defer { close(pidfd) }
        return uids(ofPIDFD: pidfd)
        #else
        return .unsupported
        #endif
    }

    /// `struct pidfd_info` as of Linux 6.13 (`PIDFD_INFO_SIZE_VER0`, 64 bytes).
    private struct PIDFDInfo {
        var mask: UInt64 = 0
        var cgroupID: UInt64 = 0
        var pid: UInt32 = 0
        var tgid: UInt32 = 0
        var ppid: UInt32 = 0
        var ruid: UInt32 = 0
        var rgid: UInt32 = 0
        var euid: UInt32 = 0
        var egid: UInt32 = 0
        var suid: UInt32 = 0
        var sgid: UInt32 = 0
        var fsuid: UInt32 = 0
        var fsgid: UInt32 = 0
        var exitCode: Int32 = 0
    }

    /// `PIDFD_INFO_CREDS`.
    private static let infoCreds: UInt64 = 1 << 1
    /// `PIDFD_GET_INFO` = `_IOWR(0xFF, 11, struct pidfd_info)`.
    private static let getInfo = UInt(3 << 30 | MemoryLayout<PIDFDInfo>.size << 16 | 0xFF << 8 | 11)

    /// What the kernel says of the process of `pidfd`.
    static func uids(ofPIDFD pidfd: CInt) -> PIDFDAnswer {
        #if os(Linux)
        var info = PIDFDInfo()
        info.mask = infoCreds
        let result = withUnsafeMutableBytes(of: &info) { ioctl(pidfd, getInfo, $0.baseAddress!) }
        if result < 0 { return errno == ESRCH ? .gone : .unsupported }
        guard info.mask & infoCreds != 0 else { return .unsupported }
        return .uids(PeerCredentials.ProcessUIDs(real: info.ruid, effective: info.euid))
        #else
        return .unsupported
        #endif
    }
}
