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
public final class ChildProcess: Sendable {
    private let process: Process
    private let stdinPipe: Pipe
    private let lines: AsyncStream<String>
    private let stderrData = NIOLockedValueBox(Data())
    private let exited = TestEvent<Int32>()
    private let exitStatus = NIOLockedValueBox<Int32?>(nil)
    private let stdoutText = NIOLockedValueBox("")

    /// Starts `executable` from the spawning thread.
    public static func spawn(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> ChildProcess {
        try await SpawnThread.shared.run {
            try ChildProcess(executable, arguments, environment: environment)
        }
    }

    private init(_ executable: String, _ arguments: [String], environment: [String: String]?) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
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
        let partial = NIOLockedValueBox(Data())
        let stdoutText = self.stdoutText
        stdoutPipe.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if chunk.isEmpty {
                handle.readabilityHandler = nil
                continuation.finish()
                return
            }
            stdoutText.withLockedValue { $0 += String(decoding: chunk, as: UTF8.self) }
            let complete: [String] = partial.withLockedValue { buffer in
                buffer.append(chunk)
                var out: [String] = []
                while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    out.append(String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self))
                    buffer.removeSubrange(buffer.startIndex...newline)
                }
                return out
            }
            for line in complete { continuation.yield(line) }
        }
        let stderrData = self.stderrData
        stderrPipe.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if chunk.isEmpty { handle.readabilityHandler = nil; return }
            stderrData.withLockedValue { $0.append(chunk) }
        }
        let exited = self.exited
        let exitStatus = self.exitStatus
        process.terminationHandler = { process in
            exitStatus.withLockedValue { $0 = process.terminationStatus }
            exited.signal(process.terminationStatus)
        }
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }

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
