import Core
import Support
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
import TestSupport
import Echo

@Suite("RPC client")
struct RPCClientTests {
    @Test func typedCallRoundTrips() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let response = try await client.call(EchoService.echo, RPCFixture.echoRequest([9, 8, 7]), timeout: .seconds(5))
            #expect(Array(response.payload) == [9, 8, 7])
            #expect(response.timeoutNano > 0 && response.timeoutNano <= Duration.seconds(5).totalNanoseconds)
            await client.close()
        }
    }

    @Test func errorStatusIsTypedWithCodeAndMessage() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let error = await rpcError {
                _ = try await client.call(EchoService.echo, RPCFixture.echoRequest(fail: .permissionDenied, message: "no ec2:DescribeInstances"))
            }
            #expect(error == RPCError(.permissionDenied, "no ec2:DescribeInstances"))
            await client.close()
        }
    }

    @Test func metadataGoesInAndComesOut() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let response = try await client.unary(
                service: RPCFixture.service, method: "Meta", payload: ByteBuffer(string: "x"),
                metadata: [("trace", "t1"), ("trace", "t2"), ("who", "test")]
            )
            #expect(response.metadata.entries.map { [$0.key, $0.value] } == [
                ["served-by", "fixture"], ["echo-trace", "t1"], ["echo-trace", "t2"], ["echo-who", "test"],
            ])
            let echoed = try await client.call(EchoService.echo, RPCFixture.echoRequest(), metadata: [("k", "v")])
            #expect(echoed.metadata.map { [$0.key, $0.value] } == [["k", "v"]])
            #expect(echoed.timeoutNano == 0)
            await client.close()
        }
    }

    @Test func deadlineExceededWhenTheServerIsSlow() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let start = ContinuousClock.now
            let error = await rpcError {
                _ = try await client.call(EchoService.echo, RPCFixture.echoRequest(delay: .seconds(30)), timeout: .milliseconds(150))
            }
            let elapsed = ContinuousClock.now - start
            #expect(error?.code == .deadlineExceeded)
            #expect(elapsed >= .milliseconds(150) && elapsed < .seconds(5))
            // The connection still serves.
            #expect(try await client.call(EchoService.echo, RPCFixture.echoRequest([1])).payload == Data([1]))
            await client.close()
        }
    }

    @Test func deadlineHoldsEvenWhenTheServerNeverAnswers() async throws {
        // A listener that accepts and reads but never writes.
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("silent.sock")
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: path).get()
        let client = try await RPCClient.connect(unixSocketPath: path, logger: LogCapture().logger())
        let start = ContinuousClock.now
        let error = await rpcError {
            _ = try await client.call(EchoService.echo, RPCFixture.echoRequest(), timeout: .milliseconds(200))
        }
        #expect(error?.code == .deadlineExceeded)
        #expect(ContinuousClock.now - start < .seconds(5))
        await client.close()
        try await silent.close()
    }

    @Test func thousandConcurrentCallsOnOneConnectionCompleteOutOfOrder() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let order = TestOrder()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<1000 {
                    group.addTask {
                        // Later calls answer sooner: completion order is reversed in blocks.
                        let delay = Duration.microseconds(Int64((1000 - index) % 100) * 300)
                        let payload = withUnsafeBytes(of: UInt32(index).bigEndian, Array.init)
                        let response = try await client.call(EchoService.echo, RPCFixture.echoRequest(payload, delay: delay), timeout: .seconds(30))
                        #expect(Array(response.payload) == payload)
                        order.record(index)
                    }
                }
                try await group.waitForAll()
            }
            let completed = order.values
            #expect(completed.count == 1000)
            #expect(Set(completed).count == 1000)
            #expect(completed != completed.sorted(), "answers arrived in call order; expected out of order")
            await client.close()
        }
    }

    @Test func lostConnectionFailsEveryCallInFlightAtOnce() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let calls = Task {
                try await withThrowingTaskGroup(of: RPCError?.self) { group in
                    for index in 0..<10 {
                        group.addTask {
                            await rpcError {
                                _ = try await client.unary(service: RPCFixture.service, method: "Hang", payload: ByteBuffer(string: "\(index)"))
                            }
                        }
                    }
                    return try await group.reduce(into: [RPCError?]()) { $0.append($1) }
                }
            }
            for _ in 0..<10 { _ = try await fixture.hangStarted.wait() }
            await fixture.server.close()  // the server goes away mid-call
            let errors = try await withTimeout(.seconds(5), "the calls to fail") { try await calls.value }
            #expect(errors.count == 10)
            #expect(errors.allSatisfy { $0?.code == .unavailable })
            // New calls fail at once too.
            let after = await rpcError { _ = try await client.call(EchoService.echo, RPCFixture.echoRequest()) }
            #expect(after?.code == .unavailable)
        }
    }

    @Test func cancellingTheCallerCancelsTheCall() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let call = Task {
                await rpcError { _ = try await client.unary(service: RPCFixture.service, method: "Hang", payload: ByteBuffer(string: "c")) }
            }
            _ = try await fixture.hangStarted.wait()
            call.cancel()
            let error = try await withTimeout(.seconds(5)) { await call.value }
            #expect(error?.code == .cancelled)
            // The connection is still good.
            #expect(try await client.call(EchoService.echo, RPCFixture.echoRequest([3])).payload == Data([3]))
            await client.close()
        }
    }

    @Test func oversizeRequestFailsLocallyAndTheConnectionStays() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let error = await rpcError {
                _ = try await client.unary(service: EchoService.serviceName, method: "Echo", payload: ByteBuffer(repeating: 0, count: 5 << 20))
            }
            #expect(error?.code == .resourceExhausted)
            #expect(try await client.call(EchoService.echo, RPCFixture.echoRequest([4])).payload == Data([4]))
            await client.close()
        }
    }

    @Test func oversizeResponseBecomesResourceExhausted() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let error = await rpcError { _ = try await client.unary(service: RPCFixture.service, method: "Big", payload: ByteBuffer()) }
            #expect(error?.code == .resourceExhausted)
            #expect(try await client.call(EchoService.echo, RPCFixture.echoRequest([5])).payload == Data([5]))
            await client.close()
        }
    }

    @Test func oneMiBPayloadRoundTrips() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let response = try await client.call(EchoService.echo, RPCFixture.echoRequest(payload))
            #expect(response.payload == Data(payload))
            await client.close()
        }
    }

    @Test func callsFromTheEventLoopExecutorWork() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let payload = try await withTaskExecutorPreference(client.executor) {
                try await client.call(EchoService.echo, RPCFixture.echoRequest([6])).payload
            }
            #expect(payload == Data([6]))
            await client.close()
        }
    }

    @Test func handlersOnTheGlobalExecutorWorkToo() async throws {
        try await RPCFixture.with(configuration: .init(handlersOnEventLoop: false)) { fixture in
            let client = try await fixture.client()
            #expect(try await client.call(EchoService.echo, RPCFixture.echoRequest([7])).payload == Data([7]))
            let error = await rpcError {
                _ = try await client.unary(service: RPCFixture.service, method: "Hang", payload: ByteBuffer(string: "g"), timeout: .milliseconds(50))
            }
            #expect(error?.code == .deadlineExceeded)
            #expect(try await fixture.hangCancelled.wait() == "g")
            await client.close()
        }
    }

    @Test func zeroTimeoutFailsWithoutSending() async throws {
        try await RPCFixture.with { fixture in
            let client = try await fixture.client()
            let error = await rpcError { _ = try await client.call(EchoService.echo, RPCFixture.echoRequest(), timeout: .zero) }
            #expect(error?.code == .deadlineExceeded)
            await client.close()
        }
    }

    @Test func connectingToNothingIsUnavailableAndNamesThePath() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("nobody.sock")
        let error = await rpcError { _ = try await RPCClient.connect(unixSocketPath: path, logger: LogCapture().logger()) }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains(path) == true)
    }
}

/// Records the order in which concurrent calls finished.
final class TestOrder: Sendable {
    private let box = NIOLockedValueBox<[Int]>([])
    func record(_ value: Int) { box.withLockedValue { $0.append(value) } }
    var values: [Int] { box.withLockedValue { $0 } }
}
