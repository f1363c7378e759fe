internal import CSystemShims
internal import Core
internal import NIOPosix
internal import NIOConcurrencyHelpers
internal import Support
#if canImport(Glibc)
internal import Glibc
#endif

/// A shim process the controller started: its pid (and process group), its
/// stdout lines, its stderr lines, its stdin (closing it tells the shim the
/// controller is gone), and its exit.
public final class SpawnedShim: Sendable {
    public let pid: Int32
    /// Lines the shim printed on stdout (the handshake line, and nothing else
    /// if it keeps the contract).
    public let stdoutLines: AsyncStream<String>
    /// Lines the shim logged on stderr.
    public let stderrLines: AsyncStream<String>
    private let stdinFD: NIOLockedValueBox<Int32?>
    private struct Exit {
        var status: Int32?
        var waiters: [UInt64: CheckedContinuation<Int32?, Never>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let exit = NIOLockedValueBox(Exit())

    fileprivate init(pid: Int32, stdinFD: Int32, stdoutFD: Int32, stderrFD: Int32) {
        self.pid = pid
        self.stdinFD = NIOLockedValueBox(stdinFD)
        stdoutLines = Self.lines(from: stdoutFD)
        stderrLines = Self.lines(from: stderrFD)
        let exit = self.exit
        DetachedThread.run {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            // Exit status, or 128 + signal as shells report it.
            let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            let waiters = exit.withLockedValue { state -> [CheckedContinuation<Int32?, Never>] in
                state.status = code
                defer { state.waiters = [:] }
                return Array(state.waiters.values)
            }
            for waiter in waiters { waiter.resume(returning: code) }
        }
    }

    private static func lines(from fd: Int32) -> AsyncStream<String> {
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        DetachedThread.run {
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = read(fd, &buffer, buffer.count)
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                pending.append(contentsOf: buffer[0..<count])
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    continuation.yield(String(decoding: pending[..<newline], as: UTF8.self))
                    pending.removeSubrange(...newline)
                }
            }
            if !pending.isEmpty { continuation.yield(String(decoding: pending, as: UTF8.self)) }
            close(fd)
            continuation.finish()
        }
        return stream
    }

    /// The exit status (128 + signal for a signal), once it has exited.
    public var exitStatus: Int32? { exit.withLockedValue { $0.status } }

    /// Waits for the process to exit and returns its status (however long
    /// that takes: bound it with `firstWithin`).
    public func waitForExit() async -> Int32 {
        // Not cancellable, so it always ends with a status.
        await waitForExit(cancellable: false) ?? -1
    }

    /// Waits for the process to exit and returns its status, or nil as
    /// soon as the calling task is cancelled (for a structured race).
    public func exitUnlessCancelled() async -> Int32? {
        await waitForExit(cancellable: true)
    }

    private func waitForExit(cancellable: Bool) async -> Int32? {
        let id = exit.withLockedValue { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Int32?, Never>) in
                enum Now { case exited(Int32), cancelled, waiting }
                let now = exit.withLockedValue { state -> Now in
                    if let status = state.status { return .exited(status) }
                    if cancellable, Task.isCancelled { return .cancelled }
                    state.waiters[id] = continuation
                    return .waiting
                }
                switch now {
                case .exited(let status): continuation.resume(returning: status)
                case .cancelled: continuation.resume(returning: nil)
                case .waiting: break
                }
            }
        } onCancel: {
            guard cancellable else { return }
            exit.withLockedValue { $0.waiters.removeValue(forKey: id) }?.resume(returning: nil)
        }
    }

    /// Closes the shim's stdin: under the contract, it exits within 1 s.
    public func closeStdin() {
        if let fd = stdinFD.withLockedValue({ fd -> Int32? in defer { fd = nil }; return fd }) {
            close(fd)
        }
    }

    /// Sends `signal` to the shim's whole process group.
    public func signalGroup(_ signal: Int32) {
        if exitStatus == nil { _ = kill(-pid, signal) }
    }

    deinit {
        closeStdin()
    }
}

/// Starts shims (as ``ShimCommand/user`` when the controller is root: see
/// `ip_spawn_as_user`). Every shim is spawned from one long-lived thread: Linux
/// delivers a child's parent-death signal when the *thread* that spawned it
/// ends, and Swift's cooperative threads come and go.
enum ShimSpawner {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func spawn(_ command: ShimCommand, socketPath: String) async throws -> SpawnedShim {
        var environment = command.environment
        environment[ShimContract.socketVariable] = socketPath
        let argv = [command.executable] + command.arguments
        let envp = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return try await SpawnThread.run {
            var stdinPipe: [Int32] = [0, 0]
            var stdoutPipe: [Int32] = [0, 0]
            var stderrPipe: [Int32] = [0, 0]
            guard ip_pipe_cloexec(&stdinPipe) == 0 else { throw Failure(description: "cannot create a pipe: \(String(cString: strerror(errno)))") }
            guard ip_pipe_cloexec(&stdoutPipe) == 0, ip_pipe_cloexec(&stderrPipe) == 0 else {
                throw Failure(description: "cannot create a pipe: \(String(cString: strerror(errno)))")
            }
            var failedStep: Int32 = 0
            let pid = withCStrings(argv) { argvPointers in
                withCStrings(envp) { envpPointers in
                    if command.dropsPrivileges, let user = command.user {
                        ip_spawn_as_user(
                            command.executable, argvPointers, envpPointers, stdinPipe[0], stdoutPipe[1], stderrPipe[1],
                            user.uid, user.gid, command.workingDirectory, &failedStep
                        )
                    } else {
                        ip_spawn(
                            command.executable, argvPointers, envpPointers, stdinPipe[0], stdoutPipe[1], stderrPipe[1],
                            command.workingDirectory
                        )
                    }
                }
            }
            close(stdinPipe[0])
            close(stdoutPipe[1])
            close(stderrPipe[1])
            guard pid > 0 else {
                close(stdinPipe[1])
                close(stdoutPipe[0])
                close(stderrPipe[0])
                let step = failedStep == 0 || failedStep == Int32(IP_SPAWN_STEP_EXEC) ? "" : " (\(String(cString: ip_spawn_step_name(failedStep))))"
                let who = command.dropsPrivileges ? " as \(command.user.map { "\($0) gid \($0.gid)" } ?? "")" : ""
                let place = command.workingDirectory.map { " in \($0)" } ?? ""
                throw Failure(description: "cannot start \(command.executable)\(place)\(who)\(step): \(String(cString: strerror(-pid)))")
            }
            return SpawnedShim(pid: pid, stdinFD: stdinPipe[1], stdoutFD: stdoutPipe[0], stderrFD: stderrPipe[0])
        }
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for pointer in pointers { free(pointer) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

/// The one thread shims are spawned from, for the life of the process (a
/// one-thread NIO pool: its thread never exits).
enum SpawnThread {
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        return pool
    }()

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }
}
