import ArgumentParser
import Core
import FoundationEssentials
import Logging
import NIOCore
import NIOPosix
import NIOConcurrencyHelpers
import Support
import Echo
#if canImport(Glibc)
import Glibc
#endif

/// Echo server and load client for scripts/bench-rpc. Speaks the same
/// command line and JSON line as the Go fixture and the C floor, so the
/// script can run all three alike.
@main
struct RPCBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpc-bench",
        abstract: "Echo RPC benchmark for the instancepoller wire protocol.",
        subcommands: [Server.self, Client.self]
    )

    struct Server: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Serve instancepoller.testing.v1.Echo until SIGTERM or stdin EOF.")

        @Option(help: "Unix socket path to listen on.")
        var socket: String

        func run() async throws {
            MallocTuning.tune(for: .largeFrames)
            var registry = RPCServiceRegistry()
            EchoService.register(into: &registry)
            let server = try await RPCServer.bind(
                unixSocketPath: socket,
                registry: registry,
                logger: Logger(label: "rpc-bench")
            )
            print("ready")
            fflush(nil)
            // Exit when stdin closes (the script that started us is gone).
            let stdinClosed = Thread { var byte: UInt8 = 0; while read(0, &byte, 1) > 0 {} }
            try await server.serving { await stdinClosed.wait() }
        }
    }

    struct Client: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Call Echo in a loop and print one JSON line.")

        @Option(help: "Unix socket path of the server.")
        var socket: String
        @Option(help: "Payload bytes per call.")
        var payload: Int = 64
        @Option(help: "Concurrent callers on one connection.")
        var concurrency: Int = 1
        @Option(help: "Seconds to measure.")
        var duration: Double = 5
        @Option(help: "Seconds to run before measuring.")
        var warmup: Double = 1

        func validate() throws {
            guard payload >= 0, concurrency >= 1, duration > 0, warmup >= 0 else {
                throw ValidationError("payload ≥ 0, concurrency ≥ 1, duration > 0 and warmup ≥ 0 are required")
            }
        }

        func run() async throws {
            MallocTuning.tune(for: .largeFrames)
            let client = try await RPCClient.connect(unixSocketPath: socket, logger: Logger(label: "rpc-bench"))
            var request = EchoService.Request()
            request.payload = Data((0..<payload).map { UInt8(truncatingIfNeeded: $0) })
            let payloadBuffer = try request.serializedBuffer()
            let clock = ContinuousClock()
            let start = clock.now
            let measureFrom = start + .milliseconds(Int64(warmup * 1000))
            let end = measureFrom + .milliseconds(Int64(duration * 1000))
            let expected = payload

            // Callers run on the connection's event loop: no thread hop per call.
            let latencies = try await withTaskExecutorPreference(client.executor) {
                try await withThrowingTaskGroup(of: [Duration].self) { group in
                    for _ in 0..<concurrency {
                        group.addTask {
                            var samples: [Duration] = []
                            samples.reserveCapacity(1 << 16)
                            while true {
                                let callStart = clock.now
                                if callStart >= end { break }
                                let response = try await client.unary(
                                    service: EchoService.serviceName, method: "Echo", payload: payloadBuffer
                                )
                                let callEnd = clock.now
                                if response.payload.readableBytes < expected {
                                    throw RPCError(.dataLoss, "short echo: \(response.payload.readableBytes) bytes")
                                }
                                if callStart >= measureFrom { samples.append(callEnd - callStart) }
                            }
                            return samples
                        }
                    }
                    var all: [Duration] = []
                    for try await samples in group { all.append(contentsOf: samples) }
                    return all
                }
            }
            await client.close()
            let sorted = latencies.sorted()
            func micros(_ quantile: Double) -> Double {
                guard !sorted.isEmpty else { return 0 }
                let d = sorted[min(sorted.count - 1, Int(Double(sorted.count) * quantile))]
                return Double(d.totalNanoseconds) / 1000
            }
            let calls = sorted.count
            print(
                #"{"impl":"swift","payload":\#(payload),"concurrency":\#(concurrency),"calls":\#(calls),"#
                    + #""seconds":\#(duration),"calls_per_sec":\#(Double(calls) / duration),"#
                    + #""p50_us":\#(micros(0.50)),"p99_us":\#(micros(0.99))}"#
            )
        }
    }
}

/// A detached OS thread, awaited without blocking the concurrency pool.
final class Thread: Sendable {
    private let done: NIOLockedValueBox<CheckedContinuation<Void, Never>?> = .init(nil)
    private let finished = NIOLockedValueBox(false)

    init(_ body: @escaping @Sendable () -> Void) {
        let done = self.done
        let finished = self.finished
        NIOThreadPool.singleton.submit { _ in
            body()
            let continuation = done.withLockedValue { c -> CheckedContinuation<Void, Never>? in
                finished.withLockedValue { $0 = true }
                defer { c = nil }
                return c
            }
            continuation?.resume()
        }
    }

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = done.withLockedValue { c -> Bool in
                if finished.withLockedValue({ $0 }) { return true }
                c = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}
