import Foundation

/// File-system helpers for socket tests.
public enum SocketFiles {
    /// Leaves a socket file with no listener behind, as a killed process does.
    public static func bindAndAbandon(_ path: String) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
        }
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(fd)
    }

    /// A blocking connection to the Unix socket at `path`: its descriptor.
    public static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let error = POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
            close(fd)
            throw error
        }
        return fd
    }

    /// A TCP connection to 127.0.0.1:`port` (blocking).
    public static func connectTCP(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            let error = POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
            close(fd)
            throw error
        }
        return fd
    }

    /// Waits (in poll(2), up to `limit`) until `count` of `descriptors`
    /// have been closed by their peer (end of file or reset); returns the
    /// ones closed. Reads and drops whatever else arrives.
    public static func waitForPeerCloses(_ descriptors: [Int32], count: Int, limit: Duration = .seconds(20)) async -> Set<Int32> {
        await onOwnThread { peerCloses(descriptors, count: count, limit: limit) }
    }

    /// `count` connections to the Unix socket at `path` (on a thread of
    /// their own: each connect may block); all or, on a failure, none.
    public static func connect(_ path: String, count: Int) async throws -> [Int32] {
        try await onOwnThread { try connecting(count) { try connect(path) } }
    }

    /// `count` connections to 127.0.0.1:`port`, as ``connect(_:count:)``.
    public static func connectTCP(port: Int, count: Int) async throws -> [Int32] {
        try await onOwnThread { try connecting(count) { try connectTCP(port: port) } }
    }

    private static func connecting(_ count: Int, _ connect: () throws -> Int32) throws -> [Int32] {
        var descriptors: [Int32] = []
        do {
            for _ in 0..<count { descriptors.append(try connect()) }
        } catch {
            for descriptor in descriptors { close(descriptor) }
            throw error
        }
        return descriptors
    }

    private static func peerCloses(_ descriptors: [Int32], count: Int, limit: Duration) -> Set<Int32> {
        var closed = Set<Int32>()
        let deadline = ContinuousClock.now + limit
        var buffer = [UInt8](repeating: 0, count: 4096)
        while closed.count < count, ContinuousClock.now < deadline {
            var fds = descriptors.filter { !closed.contains($0) }.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let remaining = deadline - ContinuousClock.now
            let ready = poll(&fds, nfds_t(fds.count), Int32(max(1, remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)))
            if ready <= 0 { continue }
            for entry in fds where entry.revents != 0 {
                let n = recv(entry.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { closed.insert(entry.fd) }
            }
        }
        return closed
    }

    /// How many sockets the kernel names by `path`: a listener bound to it
    /// and every connection it accepted that is still open (from
    /// /proc/net/unix; on a thread of its own).
    public static func sockets(namedBy path: String) async throws -> Int {
        try await onOwnThread {
            // Read to the end: a /proc file has no size to go by.
            let descriptor = open("/proc/net/unix", O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            defer { close(descriptor) }
            var table: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = read(descriptor, &buffer, buffer.count)
                if count < 0, errno == EINTR { continue }
                guard count >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
                if count == 0 { break }
                table += buffer[0..<count]
            }
            return String(decoding: table, as: UTF8.self).split(separator: "\n").filter { $0.hasSuffix(" " + path) }.count
        }
    }

    /// The permission bits of a file, e.g. 0o600.
    public static func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! NSNumber).intValue
    }
}
