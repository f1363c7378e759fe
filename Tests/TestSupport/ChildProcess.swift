import Core
import Foundation
import NIOConcurrencyHelpers

/// A program run by a test: stdin is a pipe (closing it is how the contract
/// tells a child to go), stdout is read line by line, stderr is kept.
///
/// Start one with ``spawn(_:_:environment:)``: every child is spawned from
/// one long-lived thread (Linux sends a child's parent-death signal when the
/// *thread* that spawned it exits, and Swift's pool threads come and go), and
/// its pipes are close-on-exec so that children started side by side do not
/// inherit each other's pipe ends (which would hide a closed stdin or stdout).
/// Output is read by plain blocking threads, not `FileHandle`'s
/// readabilityHandler, whose dispatch source can outlive its descriptor and
/// crash the process.
public final class ChildProcess: Sendable {
    private let process: Process
    private let stdinPipe: Pipe
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
    /// (default: the test process's).
    public static func spawn(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, workingDirectory: String? = nil
    ) async throws -> ChildProcess {
        try await SpawnThread.shared.run {
            try ChildProcess(executable, arguments, environment: environment, workingDirectory: workingDirectory)
        }
    }

    private init(_ executable: String, _ arguments: [String], environment: [String: String]?, workingDirectory: String?) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let workingDirectory { process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory, isDirectory: true) }
        stdinPipe = Pipe()
        let stdoutPipe = Pipe()
        let stderrPipe = Pipe()
        process.standardInput = stdinPipe
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        for pipe in [stdinPipe, stdoutPipe, stderrPipe] {
            for handle in [pipe.fileHandleForReading, pipe.fileHandleForWriting] {
                _ = fcntl(handle.fileDescriptor, F_SETFD, FD_CLOEXEC)
            }
        }

        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        lines = stream
        let exited = self.exited
        let exitStatus = self.exitStatus
        process.terminationHandler = { process in
            exitStatus.withLockedValue { $0 = process.terminationStatus }
            exited.signal(process.terminationStatus)
        }
        // A child starts with its parent thread's signal mask, and this
        // process blocks SIGTERM, SIGINT and SIGHUP (signal handling through
        // dispatch sources): unblock everything for the spawn, as the
        // controller's own spawner does, so a child sees signals as it would
        // when started from a shell.
        var everything = sigset_t()
        var saved = sigset_t()
        sigemptyset(&everything)
        pthread_sigmask(SIG_SETMASK, &everything, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        try process.run()

        let stdoutText = self.stdoutText
        let stderrData = self.stderrData
        let stderrLines = self.stderrLines
        let drained = self.drained
        let openPipes = NIOLockedValueBox(2)
        let pipeClosed: @Sendable () -> Void = {
            if openPipes.withLockedValue({ count in count -= 1; return count }) == 0 { drained.signal() }
        }
        // Each reader keeps its Pipe, and so the descriptor, alive to EOF.
        let stdoutReader = PipeReader(stdoutPipe)
        let stderrReader = PipeReader(stderrPipe)
        DetachedThread.run {
            var pending: [UInt8] = []
            stdoutReader.readToEnd { chunk in
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
            stderrReader.readToEnd { chunk in
                stderrData.withLockedValue { $0.append(contentsOf: chunk) }
                stderrLines.append(chunk)
            }
            stderrLines.end()
            pipeClosed()
        }
    }

    public var pid: Int32 { process.processIdentifier }

    /// The exit status, or nil while the child runs.
    public var exitStatusIfExited: Int32? { exitStatus.withLockedValue { $0 } }

    /// The next line the child printed on stdout.
    public func nextLine(_ limit: Duration = .seconds(30)) async throws -> String? {
        let lines = self.lines
        return try await withTimeout(limit, "a line from \(process.executableURL?.lastPathComponent ?? "child")") {
            var iterator = lines.makeAsyncIterator()
            return await iterator.next()
        }
    }

    /// Everything printed on stdout so far.
    public var stdout: String { stdoutText.withLockedValue { $0 } }
    public var stderr: String { String(decoding: stderrData.withLockedValue { $0 }, as: UTF8.self) }

    /// Writes to the child's stdin.
    public func writeStdin(_ text: String) {
        try? stdinPipe.fileHandleForWriting.write(contentsOf: Data(text.utf8))
    }

    /// Closes the child's stdin: under the shim contract, "the parent is gone".
    public func closeStdin() {
        try? stdinPipe.fileHandleForWriting.close()
    }

    public func terminate() { process.terminate() }
    public func kill() { Foundation.kill(process.processIdentifier, SIGKILL) }

    /// Waits for the child to exit and returns its status.
    @discardableResult
    public func waitForExit(_ limit: Duration = .seconds(30)) async throws -> Int32 {
        if let status = exitStatus.withLockedValue({ $0 }) { return status }
        return try await exited.wait(limit, "\(process.executableURL?.lastPathComponent ?? "child") to exit")
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
struct PipeReader: @unchecked Sendable {
    let pipe: Pipe
    init(_ pipe: Pipe) { self.pipe = pipe }

    func readToEnd(_ chunk: ([UInt8]) -> Void) {
        let fd = pipe.fileHandleForReading.fileDescriptor
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
