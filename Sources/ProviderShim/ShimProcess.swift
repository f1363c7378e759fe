public import Core
public import Logging
internal import CSystemShims
internal import NIOConcurrencyHelpers
internal import ServiceLifecycle
internal import UnixSignals
internal import Support
#if canImport(Glibc)
internal import Glibc
#endif

/// The shim process contract (proto/PROTOCOL.md §5) around a backend:
/// listen on `INSTANCEPOLLER_SOCKET`, print the one handshake line, log to
/// stderr, leave when stdin closes (within a second), when the parent dies,
/// or — finishing the calls in flight first — on SIGTERM, SIGINT or a
/// `Shutdown` call. With the OTLP settings in its environment it traces
/// its cloud calls (``ShimTracing``) and sends the spans left as it stops.
/// Before anything else it makes the process non-dumpable
/// with no core file size (see ``ProcessHardening``), so the credentials it
/// is sent stay out of core files and out of reach of its uid's other
/// processes.
public enum ShimProcess {
    /// The environment variable naming the socket to listen on.
    static let socketVariable = ShimContract.socketVariable

    /// Exit statuses.
    public enum ExitStatus {
        public static let ok: Int32 = 0
        /// The socket could not be set up.
        public static let failed: Int32 = 1
        /// Started wrongly (e.g. no INSTANCEPOLLER_SOCKET).
        public static let usage: Int32 = 2
    }

    public struct Options: Sendable {
        /// How long SIGTERM or `Shutdown` waits for calls in flight.
        public var drainTimeout: Duration
        /// The process environment (read for INSTANCEPOLLER_SOCKET).
        public var environment: [String: String]
        public var logger: Logger

        public init(drainTimeout: Duration = .seconds(10), environment: [String: String], logger: Logger) {
            self.drainTimeout = drainTimeout
            self.environment = environment
            self.logger = logger
        }
    }

    enum StopReason: Sendable {
        case stdinClosed, signal, shutdownCall
    }

    /// Runs `backend` under the contract until told to stop; returns the
    /// process exit status. `register` may add services on the same socket.
    public static func run<Backend: ProviderBackend>(
        backend: Backend,
        options: Options,
        register: (inout RPCServiceRegistry) -> Void = { _ in }
    ) async -> Int32 {
        let logger = options.logger
        // Credentials arrive with every call: no core file, and no ptrace or
        // /proc/<pid>/mem by other processes of this uid, from the start.
        do {
            try ProcessHardening.forbidDumpsAndTracing()
        } catch {
            printError("\(backend.identity.name): \(error)")
            return ExitStatus.failed
        }
        guard let socketPath = options.environment[socketVariable], !socketPath.isEmpty else {
            printError("\(backend.identity.name): \(socketVariable) is not set; the controller sets it to the socket this shim must listen on")
            return ExitStatus.usage
        }
        // On when the controller passed the OTLP settings (OTEL_*).
        do {
            try ShimTracing.startIfConfigured(environment: options.environment, logger: logger)
        } catch {
            printError("\(backend.identity.name): \(error)")
            return ExitStatus.usage
        }
        #if os(Linux)
        // Second guard besides stdin EOF: SIGTERM when the parent dies. The
        // kernel keeps this per thread and checks the main thread's, so set
        // it there.
        await MainActor.run { _ = ip_set_parent_death_signal(SIGTERM) }
        #endif

        // Trap SIGTERM and SIGINT before the handshake line: from then on a
        // signal must mean a graceful stop, never the default kill.
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)

        let (stops, stop) = AsyncStream.makeStream(of: StopReason.self)
        var registry = RPCServiceRegistry()
        registry.register(provider: ShimProvider(backend: backend) { stop.yield(.shutdownCall) })
        register(&registry)

        let server: RPCServer
        do {
            server = try await RPCServer.bind(unixSocketPath: socketPath, registry: registry, logger: logger)
        } catch {
            printError("\(backend.identity.name): cannot listen: \(error)")
            return ExitStatus.failed
        }
        printLine(ShimContract.handshakeLine(socketPath: socketPath))
        logger.info("serving", metadata: ["shim": "\(backend.identity.name)", "socket": "\(socketPath)"])

        watchStdin { stop.yield(.stdinClosed) }
        #if os(Linux)
        let parent = getppid()
        if parent == 1 {
            // The parent died before the death signal was armed.
            stop.yield(.stdinClosed)
        } else {
            // A third guard, which does not depend on a signal arriving: a
            // thread waits on a pidfd of the parent. (In the suite the death
            // signal was once not acted on: the shim lived on, reparented.)
            DetachedThread.run {
                if ip_wait_for_process_exit(parent, -1) == 1 { stop.yield(.stdinClosed) }
            }
        }
        #endif

        let service = ShimService(server: server, stops: stops, stop: stop, drainTimeout: options.drainTimeout, logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        // First, so that it stops last: the spans of the calls drained are sent.
        if let tracing = ShimTracing.takeService() { services.append(.init(service: tracing, serviceName: "tracing")) }
        services.append(.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup, serviceName: "shim"))
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: services, logger: logger))
        let signalWatcher = Task {
            for await _ in signals {
                await group.triggerGracefulShutdown()
                break
            }
        }
        do {
            try await group.run()
        } catch {
            logger.error("stopped with an error", metadata: ["error": "\(error)"])
        }
        signalWatcher.cancel()
        UnixSocket.remove(socketPath)
        return ExitStatus.ok
    }

    /// Calls `onEOF` once stdin reaches end of file (the controller is gone).
    static func watchStdin(onEOF: @escaping @Sendable () -> Void) {
        DetachedThread.run {
            var buffer = [UInt8](repeating: 0, count: 256)
            while true {
                let count = read(0, &buffer, buffer.count)
                if count == 0 || (count < 0 && errno != EINTR) { break }
            }
            onEOF()
        }
    }

    static func printLine(_ line: String) {
        var bytes = Array((line + "\n").utf8)
        writeAll(1, &bytes)
    }

    /// Writes one line to stderr, whole (a shim's one-line failures).
    public static func printError(_ line: String) {
        var bytes = Array((line + "\n").utf8)
        writeAll(2, &bytes)
    }

    private static func writeAll(_ fd: Int32, _ bytes: inout [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += written
        }
    }
}

/// The one long-running piece of a shim: waits for a reason to stop, then
/// stops the server — at once when the controller is gone, after draining
/// the calls in flight otherwise.
struct ShimService: Service {
    let server: RPCServer
    let stops: AsyncStream<ShimProcess.StopReason>
    let stop: AsyncStream<ShimProcess.StopReason>.Continuation
    let drainTimeout: Duration
    let logger: Logger

    func run() async {
        await withDiscardingTaskGroup { group in
            // The server's accept loop; it ends once the server is closed.
            group.addTask { await server.run() }
            await stopServer()
        }
    }

    private func stopServer() async {
        let stop = self.stop
        let reason = await withGracefulShutdownHandler {
            var reasons = stops.makeAsyncIterator()
            return await reasons.next() ?? .stdinClosed
        } onGracefulShutdown: {
            stop.yield(.signal)
        }
        switch reason {
        case .stdinClosed:
            logger.info("stdin closed: the controller is gone; exiting")
            _ = await firstWithin(.milliseconds(500)) { await server.close() }
        case .signal, .shutdownCall:
            logger.info("shutting down", metadata: ["reason": "\(reason)", "in_flight": "\(server.callsInFlight)"])
            // A hung handler can block its event loop: never wait past the
            // drain bound (plus a little to close).
            _ = await firstWithin(drainTimeout + .seconds(2)) { await server.shutdown(drainTimeout: drainTimeout) }
        }
    }
}
