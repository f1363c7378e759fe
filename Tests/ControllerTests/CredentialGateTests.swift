@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Logging
import Testing
import TestSupport

/// The credential gate's life cycle on the poll engine (manual clock,
/// in-memory cloud, real SQLite store): an invalid credential is asked
/// about again once a minute and clears itself when the shim finds it
/// valid; one found valid elsewhere (`credentials validate`) or removed
/// (`credentials remove --force`) is followed at once.
@Suite("Credential gate")
struct CredentialGateTests {
    /// Two running machines on fake/main, polled once (into the long group),
    /// then the credential fails: invalidated at `f.now`.
    static func invalidated(_ f: PollerTests.Fixture, reason: String = "AuthFailure: outage") async throws {
        f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
        f.cloud.set("i-m2", .running, addresses: ["10.0.0.2"])
        try await f.add("m1")
        try await f.add("m2")
        try await f.tick()
        try await f.tick(.seconds(3))
        #expect(try await f.entry("m1")?.group == .long)
        f.cloud.setValidity(false, reason: reason)
        // A change from outside polls them now: the gate finds it invalid.
        try await f.update("m1") { $0.agentStatus = .started }
        try await f.update("m2") { $0.agentStatus = .started }
        try await f.tick()
        try await f.tick(.seconds(3))
        #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == reason)
        #expect(try await f.machine("m1").pollError == "credential invalid: \(reason)")
        f.cloud.resetCalls()
    }

    @Test func anInvalidCredentialIsAskedAboutOnceAMinuteAndClearsItselfWhenValid() async throws {
        try await PollerTests.with { f in
            try await Self.invalidated(f)
            try await f.tick(.seconds(59))
            #expect(f.cloud.calls.isEmpty, "paused, and not asked about again before a minute")
            try await f.tick(.seconds(1))
            #expect(f.cloud.calls.map(\.method) == ["ValidateCredential"], "asked once a minute while invalid")
            #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == "AuthFailure: outage")

            // The outage ends: the next re-check clears the mark and the
            // paused machines are polled in the same round.
            f.cloud.setValidity(true)
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.11"])
            f.cloud.resetCalls()
            try await f.tick(.seconds(59))
            #expect(f.cloud.calls.isEmpty)
            try await f.tick(.seconds(1))
            #expect(f.cloud.calls.map(\.method).first == "ValidateCredential")
            #expect(f.cloud.calls("Instances").count == 1, "its machines are polled at once")
            #expect(f.cloud.calls("Instances").first?.ids.sorted() == ["i-m1", "i-m2"])
            #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == nil, "the store's mark is cleared")
            #expect(try await f.machine("m1").pollError == nil)
            #expect(try await f.machine("m1").addressValues == ["10.0.0.11"])
            #expect(f.logs.all.contains { $0.level == .info && $0.message == "credential valid again" && $0.metadata["credential"] == "fake/main" })
            let validated = try await f.store.events(after: 0, limit: 1000).filter { $0.kind == .credentialValidated }
            #expect(validated.map(\.source) == [.poller])
            #expect(validated.first?.credential == "fake/main" && validated.first?.oldValue == "AuthFailure: outage")

            // Valid again: no more re-checks beyond the gate's own.
            f.cloud.resetCalls()
            try await f.tick(.seconds(60))
            #expect(f.cloud.calls("ValidateCredential").isEmpty, "nothing due, nothing asked")
        }
    }

    @Test func aReCheckThatCannotReachTheShimIsTriedAgainAMinuteLater() async throws {
        try await PollerTests.with { f in
            try await Self.invalidated(f)
            f.cloud.setValidity(true)
            f.cloud.fail("ValidateCredential", with: ShimUnavailable(provider: "fake", reason: "no shim is running"))
            try await f.tick(.seconds(60))
            #expect(f.cloud.calls.map(\.method) == ["ValidateCredential"])
            #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == "AuthFailure: outage")
            f.cloud.fail("ValidateCredential", with: nil)
            f.cloud.resetCalls()
            try await f.tick(.seconds(30))
            #expect(f.cloud.calls.isEmpty, "not in a busy loop")
            try await f.tick(.seconds(30))
            #expect(f.cloud.calls("Instances").count == 1)
            #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == nil)
        }
    }

    @Test func aMachineAddedLaterToAnInvalidCredentialIsReCheckedToo() async throws {
        try await PollerTests.with { f in
            try await Self.invalidated(f)
            try await f.store.removeMachine(id: "m1")
            try await f.store.removeMachine(id: "m2")
            try await f.tick()
            try await f.tick(.seconds(120))
            #expect(f.cloud.calls.isEmpty, "no machine waits: not asked about")

            f.cloud.setValidity(true)
            f.cloud.set("i-m3", .running, addresses: ["10.0.0.3"])
            try await f.add("m3")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls.isEmpty, "still marked invalid in the store: refused without a call")
            #expect(try await f.machine("m3").pollError == "credential invalid: AuthFailure: outage")
            try await f.tick(.seconds(60))
            #expect(f.cloud.calls("Instances").count == 1, "asked about again a minute later, and polled")
            #expect(try await f.machine("m3").pollError == nil)
        }
    }

    @Test func theLoopWakesForTheReCheck() async throws {
        try await PollerTests.with(settings: PollSettings(longPollJitter: 0)) { f in
            try await Self.invalidated(f)
            f.cloud.setValidity(true)
            try await PollerLoopTests.running(f) {
                // Walk the loop's own wakes for a minute: the re-check happens
                // without a round forced from outside.
                let start = f.now
                while f.cloud.calls("Instances").isEmpty && f.now < start + .seconds(120) {
                    try await PollerLoopTests.step(f)
                }
                #expect(f.cloud.calls("Instances").count == 1, "polled again once the re-check found it valid")
                #expect(f.now - start <= .seconds(60))
            }
            #expect(try await f.machine("m2").pollError == nil)
        }
    }

    @Test func anExpiredCredentialIsNotAskedAboutAgainAndItsReasonIsRFC3339() async throws {
        try await PollerTests.with { f in
            try await f.store.setCredential(StoredCredential(
                provider: "fake", name: "old", authType: "t", attributes: ["k": "v"],
                expiresAt: Timestamp(nanosecondsSinceEpoch: 1_577_836_800_000_000_000)))
            try await f.add("m1", credential: "old")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(try await f.machine("m1").pollError == "credential invalid: expired at 2020-01-01T00:00:00Z")
            for _ in 0..<5 { try await f.tick(.seconds(60)) }
            #expect(f.cloud.calls.isEmpty, "only setting it again helps")
        }
    }

    @Test func aCredentialFoundValidElsewhereResumesItsMachinesAtOnce() async throws {
        try await PollerTests.with { f in
            try await Self.invalidated(f)
            f.cloud.setValidity(true)
            // What `credentials validate` does when the shim says valid.
            #expect(try await f.store.clearCredentialInvalid(provider: "fake", name: "main", source: .external))
            #expect(try await !f.store.clearCredentialInvalid(provider: "fake", name: "main", source: .external), "cleared once")
            try await f.tick()  // no time passes
            #expect(f.cloud.calls("Instances").count == 1)
            #expect(try await f.machine("m1").pollError == nil)
            #expect(f.logs.all.contains { $0.message == "credential valid again" })
        }
    }

    @Test func theKeyOfACredentialEventIsReadFromItsLabelOnce() {
        let key = CredentialKey(provider: "aws", name: "prod/eu")
        #expect(CredentialKey(label: "aws/prod/eu") == key, "the name keeps its slashes")
        #expect(key.description == "aws/prod/eu")
        #expect(CredentialKey(label: "aws") == nil)
        #expect(StoredCredential(provider: "aws", name: "prod/eu", authType: "access-key", attributes: [:]).key == key)
    }

    @Test func aRemovedCredentialPausesItsMachinesWithAClearErrorAndNoCall() async throws {
        try await PollerTests.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(try await f.entry("m1")?.group == .long)
            f.cloud.resetCalls()

            try await f.store.removeCredential(provider: "fake", name: "main")
            try await f.tick()  // no time passes: the machine says why at once
            #expect(f.cloud.calls.isEmpty)
            #expect(try await f.machine("m1").pollError == "credential invalid: credential fake/main does not exist")
            for _ in 0..<3 { try await f.tick(.seconds(60)) }
            #expect(f.cloud.calls.isEmpty, "not polled while it has no credential")
            #expect(try await f.store.machine(id: "m1") != nil, "the machine stays")

            try await f.store.setCredential(StoredCredential(provider: "fake", name: "main", authType: "access-key", attributes: ["secret-key": "new"]))
            try await f.tick()
            #expect(f.cloud.calls("Instances").count == 1, "set again: polled at once")
            #expect(try await f.machine("m1").pollError == nil)
        }
    }
}

/// The store's side of the credential life cycle.
@Suite("Credential store")
struct CredentialStoreTests {
    static func store() throws -> SQLiteMachineStore {
        try SQLiteMachineStore.inMemory(clock: ManualPollClock(), logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
    }

    @Test func credentialUseCountsTheMachinesOfAProviderPerCredential() async throws {
        let store = try Self.store()
        try await store.addMachines([
            Machine(id: "a", provider: "aws", credential: "prod"), Machine(id: "b", provider: "aws", credential: "prod"),
            Machine(id: "c", provider: "aws", credential: "dev"), Machine(id: "d", provider: "gce", credential: "prod"),
        ])
        #expect(try await store.credentialUse(provider: "aws") == ["prod": 2, "dev": 1])
        #expect(try await store.credentialUse(provider: "azure") == [:])
    }

    @Test func removeLogsAnEventAndTheMachinesStay() async throws {
        let store = try Self.store()
        try await store.setCredential(StoredCredential(provider: "aws", name: "prod", authType: "t", attributes: ["k": "v"]))
        try await store.addMachine(Machine(id: "a", provider: "aws", credential: "prod"))
        try await store.removeCredential(provider: "aws", name: "prod")
        #expect(try await store.credential(provider: "aws", name: "prod") == nil)
        #expect(try await store.machine(id: "a") != nil)
        let last = try #require(try await store.events(after: 0, limit: 100).last)
        #expect(last.kind == .credentialRemoved && last.source == .external && last.credential == "aws/prod" && last.newValue == "1 machines")
        await #expect(throws: StoreError(.notFound, "no credential aws/prod")) { try await store.removeCredential(provider: "aws", name: "prod") }
    }

    @Test func clearingTheInvalidMarkWritesOnlyWhenThereIsOne() async throws {
        let store = try Self.store()
        try await store.setCredential(StoredCredential(provider: "aws", name: "prod", authType: "t", attributes: ["k": "v"]))
        let before = try await store.latestRevision()
        #expect(try await !store.clearCredentialInvalid(provider: "aws", name: "prod", source: .poller))
        #expect(try await store.latestRevision() == before, "nothing to clear, nothing logged")
        try await store.invalidateCredential(provider: "aws", name: "prod", reason: "revoked")
        #expect(try await store.clearCredentialInvalid(provider: "aws", name: "prod", source: .poller))
        #expect(try await store.credential(provider: "aws", name: "prod")?.invalidReason == nil)
        let last = try #require(try await store.events(after: 0, limit: 100).last)
        #expect(last.kind == .credentialValidated && last.source == .poller && last.oldValue == "revoked")
        await #expect(throws: StoreError(.notFound, "no credential aws/none")) {
            try await store.clearCredentialInvalid(provider: "aws", name: "none", source: .poller)
        }
    }

    @Test(arguments: [
        (Int64(1_577_836_800_000_000_000), "2020-01-01T00:00:00Z"),
        (Int64(1_700_000_000_250_000_000), "2023-11-14T22:13:20.25Z"),
        (Int64(0), "1970-01-01T00:00:00Z"),
        (Int64(-1_000_000_000), "1969-12-31T23:59:59Z"),
        (Int64(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z"),
    ])
    func timestampsPrintAsRFC3339(nanoseconds: Int64, text: String) {
        #expect("\(Timestamp(nanosecondsSinceEpoch: nanoseconds))" == text)
    }
}
