internal import Core
public import Logging
internal import NIOConcurrencyHelpers
#if canImport(Glibc)
internal import Glibc
#endif

/// The service manager's notify protocol (systemd's `sd_notify`), spoken
/// without libsystemd: each message is one datagram of `KEY=VALUE` lines
/// sent to the `AF_UNIX`/`SOCK_DGRAM` socket named by `$NOTIFY_SOCKET` (a
/// path, or `@name` for the abstract namespace). See docs/DESIGN.md §6.6.
///
/// Without `$NOTIFY_SOCKET` nothing is sent and nothing fails. A datagram
/// that cannot be sent is logged once, at debug level, and never stops the
/// controller: the service manager is an observer, not a dependency.
public final class SystemdNotifier: Sendable {
    /// Where `$NOTIFY_SOCKET` points.
    public enum Address: Hashable, Sendable, CustomStringConvertible {
        /// A socket file.
        case path(String)
        /// A name in the abstract namespace (`@name` in the variable).
        case abstract(String)

        /// `$NOTIFY_SOCKET`'s value as an address; nil for one this does
        /// not speak to (empty, relative, `vsock:`, or too long for
        /// `sun_path`).
        public init?(_ text: String) {
            if text.hasPrefix("@") {
                let name = String(text.dropFirst())
                // sun_path: 108 bytes, the first of them the NUL marker.
                guard !name.isEmpty, name.utf8.count <= 107 else { return nil }
                self = .abstract(name)
            } else {
                guard text.hasPrefix("/"), text.utf8.count <= 107 else { return nil }
                self = .path(text)
            }
        }

        public var description: String {
            switch self {
            case .path(let path): path
            case .abstract(let name): "@\(name)"
            }
        }
    }

    /// The variables the protocol is configured by. They are the
    /// controller's own: never passed on to a shim (``ShimCommand/isPassable(_:)``).
    public static let variables = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]

    /// Where messages go; nil: nowhere (no `$NOTIFY_SOCKET`).
    public let address: Address?
    /// `$WATCHDOG_USEC`, when the watchdog is this process's: a ping is
    /// due at least every half of it.
    public let watchdogInterval: Duration?
    private let transport: any NotifyTransport
    private let logger: Logger
    private let failureLogged = NIOLockedValueBox(false)

    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` from
    /// `environment`. The watchdog is off when `$WATCHDOG_PID` names another
    /// process (it was meant for a parent that exec'd something else).
    ///
    /// - Parameter transport: how datagrams go out (tests record them);
    ///   default: a datagram socket to the address.
    public convenience init(environment: [String: String], logger: Logger) {
        self.init(environment: environment, pid: getpid(), transport: nil, logger: logger)
    }

    init(environment: [String: String], pid: Int32, transport: (any NotifyTransport)?, logger: Logger) {
        self.logger = logger
        let text = environment["NOTIFY_SOCKET"] ?? ""
        let address = text.isEmpty ? nil : Address(text)
        if !text.isEmpty, address == nil {
            logger.debug("NOTIFY_SOCKET is not a socket path or an abstract name; no notifications are sent", metadata: ["notify_socket": "\(text)"])
        }
        self.address = address
        self.transport = transport ?? DatagramTransport()
        watchdogInterval = address == nil ? nil : Self.watchdogInterval(environment: environment, pid: pid)
    }

    /// `$WATCHDOG_USEC` as a duration, if it is set, positive, and meant
    /// for `pid`.
    static func watchdogInterval(environment: [String: String], pid: Int32) -> Duration? {
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0, usec < UInt64(Int64.max / 1000) else { return nil }
        if let owner = environment["WATCHDOG_PID"], !owner.isEmpty {
            guard Int32(owner) == pid else { return nil }
        }
        return .microseconds(Int64(usec))
    }

    /// The longest a change of state waits for room in the manager's queue.
    static let stateMessageWait: Duration = .seconds(2)

    /// Whether anything is sent at all.
    public var isEnabled: Bool { address != nil }

    /// Sends `fields` as one datagram, in order (`READY=1`, `STATUS=…`).
    /// A value's line breaks become spaces: one field, one line.
    public func send(_ fields: [(String, String)]) {
        guard let address else { return }
        let message = fields.map { key, value in
            "\(key)=\(value.replacing("\r\n", with: " ").replacing("\n", with: " ").replacing("\r", with: " "))"
        }.joined(separator: "\n")
        // A ping is worth nothing late: it never waits. A change of state
        // (READY, RELOADING, STOPPING, STATUS) waits a little for room in
        // the manager's queue (a Unix datagram queue holds only
        // net.unix.max_dgram_qlen messages, 10 by default) rather than be lost.
        let wait: Duration = fields.allSatisfy({ $0.0 == "WATCHDOG" }) ? .zero : Self.stateMessageWait
        do {
            try transport.send(Array(message.utf8), to: address, waiting: wait)
        } catch {
            let first = failureLogged.withLockedValue { logged in
                defer { logged = true }
                return !logged
            }
            if first {
                logger.debug("cannot notify the service manager (said once)", metadata: ["notify_socket": "\(address)", "error": "\(error)"])
            }
        }
    }

    /// `CLOCK_MONOTONIC` in microseconds, for `RELOADING=1`'s
    /// `MONOTONIC_USEC=` (which `Type=notify-reload` wants).
    static func monotonicMicroseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000 + UInt64(spec.tv_nsec) / 1_000
    }
}

/// A datagram that could not be sent, and why.
struct NotifyFailure: Error, CustomStringConvertible {
    var description: String
}

/// How notification datagrams leave the process.
protocol NotifyTransport: Sendable {
    /// Sends `datagram`, waiting at most `waiting` for room in the
    /// receiver's queue (zero: not at all).
    func send(_ datagram: [UInt8], to address: SystemdNotifier.Address, waiting: Duration) throws(NotifyFailure)
}

/// One `SOCK_DGRAM` socket per message, as `sd_notify` does: close-on-exec
/// (no shim inherits it), and bounded: a manager that does not read cannot
/// stall the controller (`MSG_DONTWAIT`, or `SO_SNDTIMEO` for a message
/// that may wait); the datagram is then dropped and the failure logged.
struct DatagramTransport: NotifyTransport {
    func send(_ datagram: [UInt8], to address: SystemdNotifier.Address, waiting: Duration) throws(NotifyFailure) {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw NotifyFailure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var flags = Int32(MSG_NOSIGNAL)
        if waiting > .zero {
            let (seconds, attoseconds) = waiting.components
            var timeout = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
            guard setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
                throw NotifyFailure(description: "setsockopt SO_SNDTIMEO: \(String(cString: strerror(errno)))")
            }
        } else {
            flags |= Int32(MSG_DONTWAIT)
        }
        var socketAddress = sockaddr_un()
        socketAddress.sun_family = sa_family_t(AF_UNIX)
        let pathBytes: [UInt8]
        switch address {
        case .path(let path): pathBytes = Array(path.utf8) + [0]
        case .abstract(let name): pathBytes = [0] + Array(name.utf8)
        }
        let capacity = MemoryLayout.size(ofValue: socketAddress.sun_path)
        guard pathBytes.count <= capacity else { throw NotifyFailure(description: "the address is longer than \(capacity) bytes") }
        withUnsafeMutableBytes(of: &socketAddress.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
        }
        // The abstract name's length is exact: no terminating NUL.
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + pathBytes.count)
        let sent = datagram.withUnsafeBytes { bytes in
            withUnsafePointer(to: &socketAddress) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, bytes.baseAddress, bytes.count, flags, $0, length)
                }
            }
        }
        guard sent == datagram.count else {
            throw NotifyFailure(description: sent < 0 ? String(cString: strerror(errno)) : "sent \(sent) of \(datagram.count) bytes")
        }
    }
}
