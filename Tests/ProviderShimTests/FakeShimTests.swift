import Controller
import Support
import ControlAPI
import Core
import Foundation
import ProviderShim
import SwiftProtobuf
import Testing
import TestSupport
import FakeProvider

/// The fake backend over the wire, through the SDK and the typed client,
/// and the FakeCloud control service.
@Suite("provider-shim fake over the wire")
struct FakeShimTests {
    typealias F = FakeShimFixture

    @Test func allSixMethodsAnswer() async throws {
        try await F.with { f in
            let hello = try await f.client.handshake(controllerVersion: "test", timeout: F.callLimit)
            #expect(hello.shimName == "fake" && hello.protocolVersion == 1 && hello.cloudTypes == ["fake"])
            #expect(try await f.client.health(timeout: F.callLimit).status == .serving)
            #expect(try await f.client.validateCredential(cloud: F.cloudSpec, credential: F.main, timeout: F.callLimit).valid)
            f.clock.advance(by: .seconds(8))
            let instances = try await f.client.instances(cloud: F.cloudSpec, credential: F.main, ids: ["i-web-1", "i-x"], timeout: F.callLimit)
            #expect(instances.map(\.found) == [true, false])
            #expect(instances[0].status.state == .running)
            let interfaces = try await f.client.networkInterfaces(cloud: F.cloudSpec, credential: F.main, ids: ["i-web-1"], timeout: F.callLimit)
            #expect(interfaces[0].interfaces[0].addresses[0].value == "10.0.1.10")
            try await f.client.shutdown(drainTimeout: .seconds(1), timeout: F.callLimit)
            try await f.shutdownRequested.wait()
        }
    }

    @Test func aControllerOfferingNoCommonVersionIsRefusedWithBothLists() async throws {
        try await F.with { f in
            await #expect(throws: RPCError(.failedPrecondition, "shim fake speaks protocol versions [1]; the controller offered [2, 3]")) {
                _ = try await f.client.handshake(controllerVersion: "future", versions: [2, 3], timeout: F.callLimit)
            }
        }
    }

    @Test func authFailureWindowInvalidatesThenRecovers() async throws {
        try await F.with { f in
            f.clock.advance(by: .seconds(60))
            let verdict = try await f.client.validateCredential(cloud: F.cloudSpec, credential: F.main, timeout: F.callLimit)
            #expect(!verdict.valid && verdict.reason.hasPrefix("AuthFailure"))
            let error = await rpcError {
                _ = try await f.client.instances(cloud: F.cloudSpec, credential: F.main, ids: ["i-db-1"], timeout: F.callLimit)
            }
            #expect(error?.code == .unauthenticated)
            #expect(error?.message.contains("fake-secret-key") == false)
            f.clock.advance(by: .seconds(10))
            #expect(try await f.client.instances(cloud: F.cloudSpec, credential: F.main, ids: ["i-db-1"], timeout: F.callLimit)[0].found)
        }
    }

    @Test func wrongSecretIsUnauthenticatedWithoutEchoingIt() async throws {
        try await F.with { f in
            var wrong = F.main
            wrong.attributes["secret-key"] = "hunter2"
            let error = await rpcError {
                _ = try await f.client.instances(cloud: F.cloudSpec, credential: wrong, ids: ["i-db-1"], timeout: F.callLimit)
            }
            #expect(error?.code == .unauthenticated)
            #expect(error?.message.contains("hunter2") == false)
        }
    }

    @Test func throttlingCarriesTheRetryAfterHint() async throws {
        try await F.with { f in
            f.clock.advance(by: .seconds(41))
            let error = await rpcError {
                _ = try await f.client.instances(cloud: F.cloudSpec, credential: F.main, ids: ["i-db-1"], timeout: F.callLimit)
            }
            #expect(error?.code == .resourceExhausted)
            #expect(error?.retryAfter == .seconds(2))
            // Other methods are not throttled.
            let interfaces = try await f.client.networkInterfaces(cloud: F.cloudSpec, credential: F.main, ids: ["i-db-1"], timeout: F.callLimit)
            #expect(interfaces[0].found)
        }
    }

    @Test func injectedFaultsThroughTheControlService() async throws {
        try await F.with(scenario: "instances:\n  - id: i-1\n    timeline:\n      - at: 0s\n        state: running\n") { f in
            let unavailable = try await f.control.call(FakeCloudControl.injectFault, .with {
                $0.fault = .with { $0.kind = .unavailable; $0.methods = ["Instances"]; $0.message = "region down" }
            })
            await #expect(throws: RPCError(.unavailable, "region down")) {
                _ = try await f.client.instances(cloud: F.cloudSpec, credential: F.main, ids: ["i-1"], timeout: F.callLimit)
            }
            _ = try await f.control.call(FakeCloudControl.injectFault, .with {
                $0.fault = .with { $0.kind = .permissionDenied; $0.methods = ["NetworkInterfaces"] }
            })
            let denied = await rpcError {
                _ = try await f.client.networkInterfaces(cloud: F.cloudSpec, credential: F.main, ids: ["i-1"], timeout: F.callLimit)
            }
            #expect(denied?.code == .permissionDenied)
            let cleared = try await f.control.call(FakeCloudControl.clearFaults, .with { $0.faultIds = [unavailable.faultID] })
            #expect(cleared.cleared == 1)
            #expect(try await f.client.instances(cloud: F.cloudSpec, credential: F.main, ids: ["i-1"], timeout: F.callLimit)[0].found)
            #expect(try await f.control.call(FakeCloudControl.clearFaults, .init()).cleared == 1)
            // An unknown method name is refused.
            let bad = await rpcError {
                _ = try await f.control.call(FakeCloudControl.injectFault, .with { $0.fault = .with { $0.kind = .hang; $0.methods = ["Nap"] } })
            }
            #expect(bad?.code == .invalidArgument)
        }
    }

    @Test func latencyDelaysTheAnswer() async throws {
        try await F.with(scenario: "instances: []\n") { f in
            _ = try await f.control.call(FakeCloudControl.injectFault, .with {
                $0.fault = .with { $0.kind = .latency; $0.methods = ["Health"]; $0.delayNano = Duration.milliseconds(200).totalNanoseconds }
            })
            let start = ContinuousClock.now
            // The deadline only bounds a lost answer: a loaded machine may be slow to give it.
            _ = try await f.client.health(timeout: F.callLimit)
            #expect(ContinuousClock.now - start >= .milliseconds(200))
        }
    }

    @Test func setRemoveAndCallsThroughTheControlService() async throws {
        try await F.with(scenario: "instances: []\n") { f in
            _ = try await f.control.call(FakeCloudControl.setInstance, .with {
                $0.instance = .with {
                    $0.id = "i-9"
                    $0.status = .with { $0.state = .running; $0.rawStatus = "running" }
                    $0.interfaces = [.with { $0.macAddress = "02:00:00:00:09:09"; $0.addresses = [.with { $0.value = "10.9.9.9" }] }]
                }
            })
            let found = try await f.client.instances(cloud: F.cloudSpec, credential: F.main, ids: ["i-9", "i-8"], timeout: F.callLimit)
            #expect(found.map(\.found) == [true, false])
            _ = try await f.client.networkInterfaces(cloud: F.cloudSpec, credential: F.main, ids: ["i-9"], timeout: F.callLimit)
            #expect(try await f.control.call(FakeCloudControl.removeInstance, .with { $0.id = "i-9" }).removed)
            #expect(try await f.client.instances(cloud: F.cloudSpec, credential: F.main, ids: ["i-9"], timeout: F.callLimit)[0].found == false)

            let calls = try await f.control.call(FakeCloudControl.getCalls, .with { $0.reset = true })
            #expect(calls.counts.map { "\($0.method)=\($0.count)" } == ["Instances=2", "NetworkInterfaces=1"])
            #expect(calls.calls.map(\.instanceIds) == [["i-9", "i-8"], ["i-9"], ["i-9"]])
            #expect(calls.calls.allSatisfy { $0.credential == "ctl-main" })
            #expect(try await f.control.call(FakeCloudControl.getCalls, .init()).calls.isEmpty)
        }
    }

    @Test func manualClockMovesOnlyWhenAdvanced() async throws {
        try await F.with { f in
            #expect(try await f.client.instances(cloud: F.cloudSpec, credential: F.main, ids: ["i-web-1"], timeout: F.callLimit)[0].status.state == .allocating)
            let now = try await f.control.call(FakeCloudControl.advanceClock, .with { $0.byNano = Duration.seconds(8).totalNanoseconds })
            #expect(now.nowNano == Duration.seconds(8).totalNanoseconds)
            #expect(try await f.client.instances(cloud: F.cloudSpec, credential: F.main, ids: ["i-web-1"], timeout: F.callLimit)[0].status.state == .running)
        }
    }

    @Test func wallClockRefusesToBeAdvanced() async throws {
        try await F.with(wallClock: true) { f in
            let error = await rpcError { _ = try await f.control.call(FakeCloudControl.advanceClock, .with { $0.byNano = 1 }) }
            #expect(error?.code == .failedPrecondition)
            #expect(error?.message.contains("--manual-clock") == true)
        }
    }
}
