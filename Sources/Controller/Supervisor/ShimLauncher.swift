public import Core
public import Logging
internal import NIOConcurrencyHelpers
internal import Support
#if canImport(Glibc)
internal import Glibc
#endif

/// A shim started and shaken hands with: its process, a connected client,
/// and what it said in the handshake.
public struct RunningShim: Sendable {
    public let provider: String
    public let process: SpawnedShim
    public let client: ProviderClient
    public let handshake: ProviderV1.HandshakeResponse
    public let socketPath: String
    /// The last lines the shim logged on stderr.
    public let stderrTail: StderrTail
}

/// The last lines of a shim's stderr, kept for error messages.
public final class StderrTail: Sendable {
    private let lines = NIOLockedValueBox<[String]>([])
    private let limit: Int
    private let ended = Latch()
    init(limit: Int = 20) { self.limit = limit }

    /// The shim's stderr closed (it exited): the tail is complete.
    func finish() { ended.open() }

    func waitUntilFinished() async { await ended.wait() }

    func append(_ line: String) {
        lines.withLockedValue { lines in
            lines.append(line)
            if lines.count > limit { lines.removeFirst(lines.count - limit) }
        }
    }

    public var text: String { lines.withLockedValue { $0.joined(separator: " | ") } }
}

/// A line a shim wrote on stderr, as the controller logs it: a logfmt line
/// in the SDK's own format (`ts=… level=… msg=… key=value…`) keeps its
/// level, message and keys and loses its timestamp (the controller adds its
/// own); so does a line in the older `<time> <level> <message>` form; any
/// other line is info, as it is.
enum ShimLogLine {
    static func parse(_ line: String) -> (Logger.Level, Substring, Logger.Metadata) {
        if line.hasPrefix("ts="), let pairs = Logfmt.parse(line), pairs.count >= 3, pairs[0].key == "ts", pairs[1].key == "level",
           pairs[2].key == "msg", let level = Logger.Level(rawValue: pairs[1].value) {
            var metadata: Logger.Metadata = [:]
            for pair in pairs.dropFirst(3) { metadata[pair.key] = "\(pair.value)" }
            return (level, Substring(pairs[2].value), metadata)
        }
        let parts = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count >= 20, parts[0].first?.isNumber == true, parts[0].last == "Z",
              let level = Logger.Level(rawValue: String(parts[1]))
        else {
            return (.info, Substring(line), [:])
        }
        return (level, parts[2], [:])
    }
}

/// A shim that did not start; the message says why, with its stderr tail.
public struct ShimStartError: Error, Hashable, Sendable, CustomStringConvertible {
    public var provider: String
    public var problem: String
    public var stderrTail: String

    public var description: String {
        let tail = stderrTail.isEmpty ? "" : " (stderr: \(stderrTail))"
        return "provider \(provider): shim failed to start: \(problem)\(tail)"
    }
}

extension ShimStartError: RPCErrorConvertible {
    /// FailedPrecondition: the command or the shim must be fixed first (a
    /// refused swap leaves the old shim serving).
    public var rpcError: RPCError { RPCError(.failedPrecondition, description) }
}

/// Starts a provider's shim under the contract of PROTOCOL.md §5: scrubbed
/// environment, stdin a pipe, its own process group; reads the handshake
/// line (bounded by the startup timeout); connects, refusing a socket that
/// is not served by the shim or a descendant of it (``servedBy(_:command:)``);
/// calls `Handshake`.
/// The shim's stderr is forwarded into `logger`, tagged with the provider.
public enum ShimLauncher {
    public static func start(
        provider: String,
        command: ShimCommand,
        socketPath: String,
        controllerVersion: String = "instancepoller/0.1.0",
        startupTimeout: Duration = .seconds(10),
        logger: Logger
    ) async throws(ShimStartError) -> RunningShim {
        func failure(_ problem: String, _ tail: StderrTail? = nil) -> ShimStartError {
            ShimStartError(provider: provider, problem: problem, stderrTail: tail?.text ?? "")
        }
        do {
            try UnixSocket.checkPathLength(socketPath)
            let owner = command.dropsPrivileges ? command.user?.uid ?? getuid() : getuid()
            try UnixSocket.checkSocketDirectory(forSocket: socketPath, owner: owner)
            try UnixSocket.removeStale(socketPath)
        } catch {
            throw failure("\(error)")
        }
        let process: SpawnedShim
        do {
            process = try await ShimSpawner.spawn(command.withTracing(provider: provider), socketPath: socketPath)
        } catch {
            throw failure("\(error)")
        }
        let tail = StderrTail()
        Task {
            var shimLogger = logger
            shimLogger[metadataKey: "provider"] = "\(provider)"
            shimLogger[metadataKey: "shim_pid"] = "\(process.pid)"
            for await line in process.stderrLines {
                tail.append(line)
                let (level, message, metadata) = ShimLogLine.parse(line)
                // The controller's own provider and shim_pid win over the shim's words.
                shimLogger.log(level: level, "\(message)", metadata: metadata.filter { $0.key != "provider" && $0.key != "shim_pid" })
            }
            tail.finish()
        }
        do {
            let line = try await firstLine(of: process, within: startupTimeout)
            // Stopped while it started (the controller is shutting down):
            // the reader gave up, the shim did not close its stdout.
            try Task.checkCancellation()
            guard let line else {
                // Closed its stdout: it is exiting, or should be (bounded, so
                // that a shim that closed stdout and lives on cannot hang us).
                guard let status = await firstWithin(startupTimeout, { await process.waitForExit() }) else {
                    throw failure("closed its stdout without a handshake line", tail)
                }
                throw failure("exited with status \(status) before its handshake line", tail)
            }
            if let problem = ShimContract.checkHandshakeLine(line, socketPath: socketPath) {
                throw failure(problem.description, tail)
            }
            let client: ProviderClient
            do {
                var connectLogger = logger
                connectLogger[metadataKey: "provider"] = "\(provider)"
                client = try await ProviderClient.connect(
                    socketPath: socketPath, peerPolicy: servedBy(process.pid, command: command), logger: connectLogger
                )
            } catch {
                throw failure("cannot connect: \(error)", tail)
            }
            do {
                let hello = try await client.handshake(controllerVersion: controllerVersion, timeout: startupTimeout)
                logger.info("shim started", metadata: [
                    "provider": "\(provider)", "shim": "\(hello.shimName) \(hello.shimVersion)", "pid": "\(process.pid)",
                ])
                return RunningShim(
                    provider: provider, process: process, client: client, handshake: hello, socketPath: socketPath, stderrTail: tail
                )
            } catch {
                await client.connection.close()
                throw failure("handshake failed: \(error)", tail)
            }
        } catch {
            // Kill it, and let its stderr drain so the error can quote it.
            process.signalGroup(SIGKILL)
            _ = await process.waitForExit()
            // A descendant outside the group could hold stderr open: bound it.
            if await firstWithin(.seconds(1), { await tail.waitUntilFinished() }) == nil { tail.finish() }
            UnixSocket.remove(socketPath)
            if var startError = error as? ShimStartError {
                startError.stderrTail = tail.text
                throw startError
            }
            throw failure("no handshake line within \(startupTimeout)", tail)
        }
    }

    /// Who may serve a shim's socket: the process the controller started or
    /// one of its descendants (walking the ppid chain), and only as the
    /// shim's user (`shim.user`, else the controller's uid or root). Checked
    /// on every connection to a shim before a byte is sent, so a process
    /// that put its own socket at the shim's path gets nothing.
    static func servedBy(_ shimPID: Int32, command: ShimCommand) -> PeerPolicy {
        let user = command.dropsPrivileges ? command.user : nil
        let me = getuid()
        let uids = user.map { "uid \($0.uid)" } ?? "uid \(me) or root"
        return PeerPolicy(summary: "the shim (pid \(shimPID)) or a descendant of it, as \(uids)") { peer in
            let uidAllowed = user.map { peer.uid == $0.uid } ?? (peer.uid == me || peer.uid == 0)
            return uidAllowed && ProcessAncestry.isSelfOrDescendant(peer.pid, of: shimPID)
        }
    }

    /// The first stdout line, nil if stdout closed first; throws on timeout.
    private static func firstLine(of process: SpawnedShim, within limit: Duration) async throws -> String? {
        let lines = process.stdoutLines
        guard let line = await firstWithin(limit, {
            var iterator = lines.makeAsyncIterator()
            return await iterator.next()
        }) else {
            throw CancellationError()
        }
        return line
    }
}
