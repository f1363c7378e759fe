@_spi(Testing) internal import Controller
internal import Core
internal import Foundation
internal import Logging
internal import NIOCore
internal import NIOPosix
internal import ProviderShim
internal import SwiftProtobuf
internal import ControlAPI
internal import FakeProvider

#if canImport(Glibc)
internal import Glibc
#endif

/// A client's bytes on a served connection: the provider service of a shim
/// over the fake backend, as `provider-shim fake` registers it (without the
/// fake cloud's control service, whose faults may end the process on
/// purpose), and the controller's control service over an in-memory store
/// of 30 machines (no providers configured; `Events` waits at most 50 ms).
///
/// The input is written to one end of a socketpair; the server serves the
/// other end through ``RPCServer/serve(connection:registry:configuration:logger:)``.
/// Properties: every complete request frame gets exactly one response frame
/// with its stream id; every response is a well-formed ttrpc `Response`; the
/// server never closes the connection on a complete input; nothing else is
/// sent; a `ListMachines` or `Events` request with a page token (which the
/// input cannot hold a valid one of: tokens are sealed with a key drawn at
/// start) is answered InvalidArgument, never with a page.
final class RequestDispatchTarget: Sendable {
    static let shared = RequestDispatchTarget()

    /// How long the answers to one input may take. Handlers here answer at
    /// once, so running out of it means an answer was lost.
    static let answerLimit: Double = 10

    let registry: RPCServiceRegistry
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let logger = Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }

    private init() {
        let scenario = try! FakeScenario.parse(
            """
            name: fuzz
            credentials:
              - name: good
                attributes: {token: t}
            instances:
              - id: i-1
                timeline:
                  - at: 0s
                    state: running
                    interfaces:
                      - device_index: 0
                        addresses:
                          - {value: 10.0.0.1, scope: cloud-local}
              - id: i-2
                timeline:
                  - at: 0s
                    state: stopped
            """,
            file: "fuzz-scenario.yaml"
        )
        let cloud = FakeCloud(scenario: scenario, clock: ManualFakeClock())
        var registry = RPCServiceRegistry()
        registry.register(provider: ShimProvider(backend: FakeBackend(cloud: cloud, logger: logger)) {})
        Self.controlService(logger: logger).register(into: &registry)
        self.registry = registry
    }

    /// The control service over 30 machines (every third with two
    /// interfaces), without providers.
    static func controlService(logger: Logger) -> ControlService {
        let clock = ManualPollClock()
        let store = try! SQLiteMachineStore.inMemory(clock: clock, logger: logger)
        let machines = (0..<30).map { index in
            Machine(
                id: "m-\(index)", provider: index % 2 == 0 ? "cloud" : "other", credential: "main", instanceID: "i-\(index)",
                interfaces: index % 3 == 0 ? (0..<2).map { device in
                    .with {
                        $0.deviceIndex = Int32(device)
                        $0.addresses = [.with { $0.value = "10.0.\(device).\(index)"; $0.scope = .cloudLocal }]
                    }
                } : [])
        }
        let seeded = DispatchSemaphore(value: 0)
        Task {
            try! await store.addMachines(machines)
            seeded.signal()
        }
        seeded.wait()
        let fleet = ProviderFleet(
            providers: [], runtimeDirectory: "/nonexistent", clock: clock, settings: SupervisionSettings(), credentials: nil, logger: logger)
        return ControlService(
            identity: .init(pid: 1, version: "fuzz", startedAt: clock.now, storePath: ":memory:", runtimeDirectory: "/nonexistent"),
            store: store, fleet: fleet, clock: clock, environment: [:], maxEventsWait: .milliseconds(50), logger: logger)
    }

    /// Whether `data`, a request frame's, asks for a page with a token: a
    /// forged one, since the input cannot know the key.
    static func carriesPageToken(_ data: [UInt8]) -> Bool {
        // (With a deadline, it may pass before the answer: not counted.)
        guard let envelope = try? RequestEnvelope(decoding: ByteBuffer(bytes: data)), envelope.service == ControlV1.serviceName,
              envelope.timeoutNanos == 0
        else {
            return false
        }
        let payload = Array(envelope.payload.readableBytesView)
        switch envelope.method {
        case ControlV1.listMachines.method:
            return !((try? Instancepoller_Control_V1_ListMachinesRequest(serializedBytes: payload))?.pageToken.isEmpty ?? true)
        case ControlV1.events.method:
            return !((try? Instancepoller_Control_V1_EventsRequest(serializedBytes: payload))?.pageToken.isEmpty ?? true)
        default:
            return false
        }
    }

    func run(_ input: [UInt8]) throws(FuzzPropertyViolation) {
        // The streams that must be answered: every complete request frame,
        // oversized ones included.
        var expected: [UInt32: Int] = [:]
        // Streams (used once) whose request carries a page token.
        var forged: Set<UInt32> = []
        let (frames, _) = FrameDecoderTarget.reference(input, maxDataLength: FrameHeader.maxDataLength)
        for frame in frames {
            switch frame {
            case .frame(let streamID, let type, _, let data) where type == FrameType.request.rawValue:
                expected[streamID, default: 0] += 1
                if Self.carriesPageToken(data) { forged.insert(streamID) }
            case .oversized(let streamID, let type, _) where type == FrameType.request.rawValue:
                expected[streamID, default: 0] += 1
            default:
                break
            }
        }

        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            fatalError("socketpair: \(String(cString: strerror(errno)))")
        }
        let client = fds[0]
        let registry = self.registry
        let logger = self.logger
        let server: any Channel
        do {
            server = try NIOPipeBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try RPCServer.serve(connection: channel, registry: registry, logger: logger)
                    }
                }
                .takingOwnershipOfDescriptor(inputOutput: fds[1])
                .wait()
        } catch {
            close(client)
            fatalError("serving a socketpair failed: \(error)")
        }
        defer {
            try? server.close().wait()
            close(client)
        }

        let answers: [UInt32: Int]
        let codes: [UInt32: RPCStatusCode]
        do {
            try writeAll(client, input)
            (answers, codes) = try readAnswers(client, count: expected.values.reduce(0, +))
        } catch {
            throw FuzzPropertyViolation(.requestDispatch, error.description)
        }
        guard answers == expected else {
            throw FuzzPropertyViolation(.requestDispatch, "answered streams \(answers), requests were \(expected)")
        }
        for stream in forged where expected[stream] == 1 && codes[stream] != .invalidArgument {
            throw FuzzPropertyViolation(
                .requestDispatch, "stream \(stream) asked for a page with a forged token and was answered \(codes[stream].map { "\($0)" } ?? "OK")")
        }
        // Nothing more arrives, and the connection is still open.
        var probe: UInt8 = 0
        let extra = recv(client, &probe, 1, Int32(MSG_DONTWAIT))
        if extra == 0 {
            throw FuzzPropertyViolation(.requestDispatch, "the server closed the connection after a complete input")
        }
        if extra > 0 {
            throw FuzzPropertyViolation(.requestDispatch, "the server sent bytes beyond one answer per request")
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(Failure) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "writing the input failed after \(sent) bytes: \(String(cString: strerror(errno)))")
            }
            sent += n
        }
    }

    /// Reads response frames until `count` have arrived, within the limit:
    /// the answers per stream, and the error code of each stream answered
    /// with one.
    private func readAnswers(_ fd: Int32, count: Int) throws(Failure) -> ([UInt32: Int], [UInt32: RPCStatusCode]) {
        var answers: [UInt32: Int] = [:]
        var codes: [UInt32: RPCStatusCode] = [:]
        var received = 0
        var buffer: [UInt8] = []
        let start = Date()
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while received < count {
            let waited = Date().timeIntervalSince(start)
            guard waited < Self.answerLimit else {
                throw Failure(description: "\(count - received) of \(count) requests unanswered after \(Int(Self.answerLimit)) s")
            }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32((Self.answerLimit - waited) * 1000) + 1)
            if ready <= 0 { continue }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 {
                throw Failure(description: "the server closed the connection with \(count - received) of \(count) requests unanswered")
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "reading answers failed: \(String(cString: strerror(errno)))")
            }
            buffer.append(contentsOf: chunk[0..<n])
            let (frames, leftover) = FrameDecoderTarget.reference(buffer, maxDataLength: FrameHeader.maxDataLength)
            for frame in frames {
                guard case .frame(let streamID, let type, let flags, let data) = frame else {
                    throw Failure(description: "the server sent a frame over the 4 MiB limit")
                }
                guard type == FrameType.response.rawValue, flags == 0 else {
                    throw Failure(description: "the server sent a frame of type \(type) flags \(flags), not a response")
                }
                do {
                    let response = try ResponseEnvelope(decoding: ByteBuffer(bytes: data))
                    if let error = response.error { codes[streamID] = error.code }
                } catch {
                    throw Failure(description: "the answer to stream \(streamID) is not a ttrpc Response: \(error)")
                }
                answers[streamID, default: 0] += 1
                received += 1
            }
            buffer.removeFirst(buffer.count - leftover)
        }
        return (answers, codes)
    }
}
