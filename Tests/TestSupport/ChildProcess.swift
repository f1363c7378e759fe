import CSystemShims
import Core
import Foundation
import NIOConcurrencyHelpers
import Support

/// A program run by a test: stdin is a pipe (closing it is how the contract
/// tells a child to go), stdout is read line by line, stderr is kept.
///
/// Start one with ``spawn(_:_:environment:workingDirectory:)``: every child
/// is spawned from one long-lived thread (Linux sends a child's parent-death
/// signal when the *thread* that spawned it exits, and Swift's pool threads
/// come and go) with `ip_spawn` (posix_spawn: its own process group, signals
/// at their defaults, every descriptor but its three pipe ends closed), so
/// children started side by side never inherit each other's pipe ends.
/// Foundation's `Process` is not used: to close descriptors it lists
/// `/proc/self/fd` and copies each entry whole, which reads past the end of
/// the listing's buffer now and then and crashed the test process while
/// other tests held thousands of descriptors. Output is read and the child
/// reaped by plain blocking threads.
public final class ChildProcess: Sendable {
    public let pid: Int32
    private let name: String
    /// The write end of the child's stdin, until closed.
    private let stdinWriter: NIOLockedValueBox<Int32?>
    private let lines: AsyncStream<String>
    private let stderrData = NIOLockedValueBox(Data())
    /// stderr, line by line, with waits for a matching line.
    public let stderrLines = LineLog()
    private let stdoutText = NIOLockedValueBox("")
    private let exited = TestEvent<Int32>()
    private let exitStatus = NIOLockedValueBox<Int32?>(nil)
    /// Both output pipes reached end of file.
    private let drained = TestEvent<Void>()
    private let outputComplete = NIOLockedValueBox(false)

    /// Starts `executable` from the spawning thread, in `workingDirectory`
    /// (default: the test process's), with `environment` (default: the test
    /// process's).
    public static func spawn(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, workingDirectory: String? = nil
    ) async throws -> ChildProcess {
        try await SpawnThread.shared.run {
            try ChildProcess(executable, arguments, environment: environment, workingDirectory: workingDirectory)
        }
    }

    public struct SpawnError: Error, CustomStringConvertible {
        public var description: String
    }

    private init(_ executable: String, _ arguments: [String], environment: [String: String]?, workingDirectory: String?) throws {
        // A write to a child's closed stdin must fail, not end the tests.
        signal(SIGPIPE, SIG_IGN)
        name = URL(fileURLWithPath: executable).lastPathComponent
        var input: [Int32] = [-1, -1]
        var output: [Int32] = [-1, -1]
        var errors: [Int32] = [-1, -1]
        guard ip_pipe_cloexec(&input) == 0 else { throw SpawnError(description: "pipe: \(String(cString: strerror(errno)))") }
        guard ip_pipe_cloexec(&output) == 0 else {
            input.forEach { close($0) }
            throw SpawnError(description: "pipe: \(String(cString: strerror(errno)))")
        }
        guard ip_pipe_cloexec(&errors) == 0 else {
            (input + output).forEach { close($0) }
            throw SpawnError(description: "pipe: \(String(cString: strerror(errno)))")
        }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let variables = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let envp = variables.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        let spawned = ip_spawn(executable, argv, envp, input[0], output[1], errors[1], workingDirectory)
        // The child's ends are the child's.
        [input[0], output[1], errors[1]].forEach { close($0) }
        guard spawned > 0 else {
            [input[1], output[0], errors[0]].forEach { close($0) }
            throw SpawnError(description: "cannot start \(executable): \(String(cString: strerror(-spawned)))")
        }
        pid = spawned
        stdinWriter = NIOLockedValueBox(input[1])

        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        lines = stream
        let exited = self.exited
        let exitStatus = self.exitStatus
        DetachedThread.run {
            var status: Int32 = 0
            while waitpid(spawned, &status, 0) < 0 && errno == EINTR {}
            // As a shell reports it: the exit code, or the signal's number.
            let code = status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
            exitStatus.withLockedValue { $0 = code }
            exited.signal(code)
        }

        let stdoutText = self.stdoutText
        let stderrData = self.stderrData
        let stderrLines = self.stderrLines
        let drained = self.drained
        let openPipes = NIOLockedValueBox(2)
        let pipeClosed: @Sendable () -> Void = {
            if openPipes.withLockedValue({ count in count -= 1; return count }) == 0 { drained.signal() }
        }
        let (stdoutFD, stderrFD) = (output[0], errors[0])
        DetachedThread.run {
            var pending: [UInt8] = []
            PipeReader.readToEnd(stdoutFD) { chunk in
                stdoutText.withLockedValue { $0 += String(decoding: chunk, as: UTF8.self) }
                pending.append(contentsOf: chunk)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    continuation.yield(String(decoding: pending[..<newline], as: UTF8.self))
                    pending.removeSubrange(...newline)
                }
            }
            continuation.finish()
            pipeClosed()
        }
        DetachedThread.run {
            PipeReader.readToEnd(stderrFD) { chunk in
                stderrData.withLockedValue { $0.append(contentsOf: chunk) }
                stderrLines.append(chunk)
            }
            stderrLines.end()
            pipeClosed()
        }
    }

    /// Runs `executable` to its end with the given descriptors as its stdin,
    /// stdout and stderr, blocking the calling thread (call it through
    /// `onOwnThread`): whether a signal ended it, and its exit status or
    /// signal number.
    public static func runToEnd(
        _ executable: String, _ arguments: [String], stdin: Int32, stdout: Int32, stderr: Int32
    ) throws -> (signaled: Bool, status: Int32) {
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        let pid = ip_spawn(executable, argv, envp, stdin, stdout, stderr, nil)
        guard pid > 0 else { throw SpawnError(description: "cannot start \(executable): \(String(cString: strerror(-pid)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signaled = status & 0x7f != 0
        return (signaled, signaled ? status & 0x7f : (status >> 8) & 0xff)
    }

    /// The exit status, or nil while the child runs.
    public var exitStatusIfExited: Int32? { exitStatus.withLockedValue { $0 } }

    /// The next line the child printed on stdout.
    public func nextLine(_ limit: Duration = .seconds(30)) async throws -> String? {
        let lines = self.lines
        return try await withTimeout(limit, "a line from \(name)") {
            var iterator = lines.makeAsyncIterator()
            return await iterator.next()
        }
    }

    /// Everything printed on stdout so far.
    public var stdout: String { stdoutText.withLockedValue { $0 } }
    public var stderr: String { String(decoding: stderrData.withLockedValue { $0 }, as: UTF8.self) }

    /// Writes to the child's stdin (nothing once it is closed, or the child
    /// stopped reading it).
    public func writeStdin(_ text: String) {
        stdinWriter.withLockedValue { fd in
            guard let fd else { return }
            var bytes = Array(text.utf8)[...]
            while !bytes.isEmpty {
                let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if written < 0, errno == EINTR { continue }
                if written <= 0 { return }
                bytes = bytes.dropFirst(written)
            }
        }
    }

    /// Closes the child's stdin: under the shim contract, "the parent is gone".
    public func closeStdin() {
        stdinWriter.withLockedValue { fd in
            if let open = fd { close(open) }
            fd = nil
        }
    }

    public func terminate() { Foundation.kill(pid, SIGTERM) }
    public func kill() { Foundation.kill(pid, SIGKILL) }

    /// Waits for the child to exit and returns its status.
    @discardableResult
    public func waitForExit(_ limit: Duration = .seconds(30)) async throws -> Int32 {
        if let status = exitStatus.withLockedValue({ $0 }) { return status }
        return try await exited.wait(limit, "\(name) to exit")
    }

    /// Waits until stdout and stderr have been read to the end (the child
    /// exited and nothing else holds them), then returns both.
    public func output(_ limit: Duration = .seconds(10)) async throws -> (stdout: String, stderr: String) {
        if !outputComplete.withLockedValue({ $0 }) {
            try await drained.wait(limit, "the child's output to end")
            outputComplete.withLockedValue { $0 = true }
        }
        return (stdout, stderr)
    }
}

/// A pipe's read end, read with blocking `read` on a plain thread.
enum PipeReader {
    /// Reads `fd` to end of file, then closes it.
    static func readToEnd(_ fd: Int32, _ chunk: ([UInt8]) -> Void) {
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { return }
            chunk(Array(buffer[0..<count]))
        }
    }
}

/// The one thread every child process is spawned from, for the life of the
/// test process.
final class SpawnThread: @unchecked Sendable {
    static let shared = SpawnThread()

    private let condition = NSCondition()
    private var jobs: [() -> Void] = []  // guarded by `condition`

    private init() {
        let thread = Thread { [self] in
            while true {
                condition.lock()
                while jobs.isEmpty { condition.wait() }
                let job = jobs.removeFirst()
                condition.unlock()
                job()
            }
        }
        thread.name = "test-spawn"
        thread.start()
    }

    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            condition.lock()
            jobs.append { continuation.resume(with: Result { try body() }) }
            condition.signal()
            condition.unlock()
        }
    }
}
