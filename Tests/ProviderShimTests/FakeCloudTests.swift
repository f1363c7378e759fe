import Core
import Support
import ProviderShim
import SwiftProtobuf
import Testing
import FakeProvider

/// The fake cloud's engine on a manual clock: no waiting, exact times.
@Suite("Fake cloud timelines and faults")
struct FakeCloudTests {
    static func cloud(_ yaml: String? = nil) throws -> (FakeCloud, ManualFakeClock) {
        let scenario = try yaml.map { try FakeScenario.parse($0, file: "test.yaml") }
            ?? FakeScenario.load(path: ScenarioParserTests.example)
        let clock = ManualFakeClock()
        return (FakeCloud(scenario: scenario, clock: clock), clock)
    }

    static let main = ProviderV1.Credential.with {
        $0.name = "ctl-main"
        $0.attributes = ["access-key": "AKIAFAKEEXAMPLE", "secret-key": "fake-secret-key"]
    }

    @Test func fleetsGenerateInstancesWithoutStoringThem() throws {
        let (cloud, clock) = try Self.cloud("""
            fleets:
              - prefix: i-f-
                count: 70000
                interfaces: 2
                timeline:
                  - {at: 0s, state: allocating, raw_status: pending}
                  - {at: 5s, state: running, raw_status: running}
            """)
        let ids = ["i-f-1", "i-f-65793", "i-f-70000", "i-f-70001", "i-f-0", "i-f-01", "other"]
        #expect(cloud.instances(ids).map(\.found) == [true, true, true, false, false, false, false])
        #expect(cloud.instances(["i-f-2"])[0].status.state == .allocating)
        clock.advance(by: .seconds(5))
        #expect(cloud.instances(["i-f-2"])[0].status.state == .running)
        let interfaces = cloud.networkInterfaces(["i-f-65793"])[0].interfaces
        #expect(interfaces.map(\.deviceIndex) == [0, 1])
        #expect(interfaces.map { $0.addresses.map(\.value) } == [["10.1.1.1"], ["172.17.1.1"]], "made from the number 65793 = 0x010101")
        #expect(Set(cloud.networkInterfaces(["i-f-1", "i-f-2"]).map { $0.interfaces[0].macAddress }).count == 2, "unique per member")
        #expect(throws: ScenarioError.self) { try FakeScenario.parse("fleets: [{prefix: x, count: 3, interfaces: 9, timeline: [{at: 0s}]}]", file: "f.yaml") }
    }

    @Test func timelineMovesWithTheClock() throws {
        let (cloud, clock) = try Self.cloud()
        func web() -> ProviderV1.InstanceResult { cloud.instances(["i-web-1"])[0] }
        #expect(web().found && web().status.state == .allocating && web().status.rawStatus == "pending")
        clock.advance(by: .seconds(3))
        #expect(web().status.state == .provisioning && web().status.message == "booting")
        #expect(cloud.networkInterfaces(["i-web-1"])[0].interfaces.isEmpty)
        clock.advance(by: .seconds(5))
        #expect(web().status.state == .running && web().status.message == "")
        let interfaces = cloud.networkInterfaces(["i-web-1"])[0].interfaces
        #expect(interfaces.map(\.providerID) == ["eni-web1", "eni-web1b"])
        clock.advance(by: .seconds(112))
        #expect(web().status.state == .stopped)
        #expect(cloud.networkInterfaces(["i-web-1"])[0].interfaces.count == 2)  // kept
        clock.advance(by: .seconds(30))
        #expect(!web().found)
        #expect(!cloud.networkInterfaces(["i-web-1"])[0].found)
    }

    @Test func anInstanceDoesNotExistBeforeItsFirstEvent() throws {
        let (cloud, clock) = try Self.cloud()
        #expect(!cloud.instances(["i-late-1"])[0].found)
        clock.advance(by: .seconds(30))
        #expect(cloud.instances(["i-late-1"])[0].status.state == .provisioningError)
    }

    @Test func resultsAreIndexAlignedAndUnknownIdsNotFound() throws {
        let (cloud, _) = try Self.cloud()
        let results = cloud.instances(["nope", "i-db-1", "i-web-1", "nope"])
        #expect(results.map(\.instanceID) == ["nope", "i-db-1", "i-web-1", "nope"])
        #expect(results.map(\.found) == [false, true, true, false])
    }

    @Test func setAndRemoveReplaceTheRestOfTheTimeline() throws {
        let (cloud, clock) = try Self.cloud()
        clock.advance(by: .seconds(1))
        cloud.setInstance(.with {
            $0.id = "i-web-1"
            $0.status = .with { $0.state = .running; $0.rawStatus = "running" }
        })
        clock.advance(by: .seconds(200))  // past the scenario's stop and gone
        #expect(cloud.instances(["i-web-1"])[0].status.state == .running)
        #expect(cloud.removeInstance("i-web-1"))
        #expect(!cloud.instances(["i-web-1"])[0].found)
        #expect(!cloud.removeInstance("never-existed"))
        cloud.setInstance(.with { $0.id = "i-new"; $0.status.state = .allocating })
        #expect(cloud.instances(["i-new"])[0].status.state == .allocating)
    }

    @Test func credentialsAreMatchedByAttributes() throws {
        let (cloud, _) = try Self.cloud()
        #expect(cloud.verdict(for: Self.main) == (true, ""))
        var wrong = Self.main
        wrong.attributes["secret-key"] = "guess"
        let rejected = cloud.verdict(for: wrong)
        #expect(!rejected.valid && !rejected.reason.contains("guess"))
        let revoked = cloud.verdict(for: .with { $0.attributes = ["access-key": "AKIAREVOKED", "secret-key": "old-secret"] })
        #expect(revoked == (false, "AuthFailure: key AKIAREVOKED was revoked"))
    }

    @Test func authFailureFaultHasAWindowAndACredential() throws {
        let (cloud, clock) = try Self.cloud()
        clock.advance(by: .seconds(59))
        #expect(cloud.verdict(for: Self.main).valid)
        clock.advance(by: .seconds(1))
        #expect(cloud.verdict(for: Self.main) == (false, "AuthFailure: AWS was not able to validate the provided access credentials"))
        clock.advance(by: .seconds(10))
        #expect(cloud.verdict(for: Self.main).valid)
    }

    @Test func faultsApplyToTheirMethodsOnly() throws {
        let (cloud, clock) = try Self.cloud()
        clock.advance(by: .seconds(41))
        #expect(cloud.activeFaults(method: "Instances", credentialName: "main").map(\.kind) == [.throttle])
        #expect(cloud.activeFaults(method: "NetworkInterfaces", credentialName: "main").map(\.kind) == [.latency])
        #expect(cloud.activeFaults(method: "Health", credentialName: nil).isEmpty)
        clock.advance(by: .seconds(5))
        #expect(cloud.activeFaults(method: "Instances", credentialName: "main").isEmpty)
    }

    @Test func injectedAndClearedFaults() throws {
        let (cloud, _) = try Self.cloud("instances: []\n")
        let id = cloud.inject(.with { $0.kind = .unavailable; $0.methods = ["Health"] })
        #expect(cloud.activeFaults(method: "Health", credentialName: nil).map(\.kind) == [.unavailable])
        #expect(cloud.clearFaults([id]) == 1)
        #expect(cloud.activeFaults(method: "Health", credentialName: nil).isEmpty)
        #expect(cloud.clearFaults([id]) == 0)
    }

    @Test func crashComesOnTheCallAfterAfterCalls() throws {
        let (cloud, _) = try Self.cloud("faults:\n  - kind: crash\n    after_calls: 3\n")
        let crashes = (1...4).map { _ in cloud.record(method: "Health", ids: [], credentialName: nil) }
        #expect(crashes == [false, false, false, true])
    }

    @Test func callsAreCountedAndTheirIdsKept() throws {
        let (cloud, clock) = try Self.cloud("instances: []\n")
        _ = cloud.record(method: "Instances", ids: ["a", "b"], credentialName: "main")
        clock.advance(by: .seconds(2))
        _ = cloud.record(method: "NetworkInterfaces", ids: ["a"], credentialName: "main")
        _ = cloud.record(method: "Instances", ids: ["c"], credentialName: "main")
        let (counts, calls) = cloud.calls(reset: true)
        #expect(counts == ["Instances": 2, "NetworkInterfaces": 1])
        #expect(calls.map(\.instanceIds) == [["a", "b"], ["a"], ["c"]])
        #expect(calls.map(\.atNano) == [0, 2_000_000_000, 2_000_000_000])
        #expect(cloud.calls().counts.isEmpty)
    }

    @Test func callHistoryKeepsTheMostRecent() throws {
        let (cloud, _) = try Self.cloud("instances: []\n")
        for index in 0..<(FakeCloud.callHistoryLimit + 5) {
            _ = cloud.record(method: "Instances", ids: ["\(index)"], credentialName: nil)
        }
        let (counts, calls) = cloud.calls()
        #expect(counts["Instances"] == UInt64(FakeCloud.callHistoryLimit + 5))
        #expect(calls.count == FakeCloud.callHistoryLimit)
        #expect(calls.first?.instanceIds == ["5"])
        #expect(calls.last?.instanceIds == ["\(FakeCloud.callHistoryLimit + 4)"])
    }
}
