@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Logging
import SwiftProtobuf
import Testing
import TestSupport

/// The poll engine end to end on the real SQLite store, an in-memory cloud
/// and a manual clock, one rule per test; more rules in PollerRuleTests.swift,
/// the loop under stress in PollerLoopTests.swift.
///
/// Rule → test (PollScheduleTests covers the same rules on the pure schedule):
/// - config names the missing piece → configValidationNamesTheMissingPiece, badSettingsAreNamed
/// - new machine → short group, due in 3 s → newMachineJoinsTheShortGroup
/// - bump 3→6→12→24→48→60→60 → backoffWhileAllocatingThreeSixTwelve (and bumpsFollowThreeSixTwelveUpToTheCap)
/// - outside changes reset to short: life, instance id, provider, credential → aLongGroupMachineIsResetByAnOutsideChange, changeEventResetsATrackedMachine
/// - an agent start (every `started`, also repeated) resets and is recorded → everyAgentStartIsRecordedAndResetsTheMachine
/// - an agent going down/error/pending does not move a long-group machine → anAgentThatStopsDoesNotMoveALongGroupMachine
/// - a changed instance id / pair is polled with the new one → aChangedInstanceIDIsPolledWithTheNewID, aChangedPairIsPolledWithTheNewPair
/// - only outside changes count; the poller's writes do not wake it → thePollersOwnWritesDoNotResetTheBackoff
/// - status and interfaces written only when changed, events with old and new values → runningWithAddressesMovesToTheLongGroupAndStatusIsWrittenOnce
/// - changes logged at info, kept in the status history → statusChangesAreLoggedKeptInTheHistoryAndCarryOldAndNewValues
/// - provisioning-error → agent error with the provider's message → aProvisioningErrorSetsTheAgentToErrorWithTheProvidersMessage
/// - addresses + agent started (agentless counts) → long → runningWithAddresses…; pendingAgentStaysShortAndBacksOff
/// - allocating/provisioning → bumped → backoffWhileAllocatingThreeSixTwelve, changeEventResetsATrackedMachine
/// - long group and unknown / not found / no addresses → short, reset → aLongGroupMachineThatBecomesUnknownOrNotFoundGoesBackToShort, longGroupMachineThatLosesItsAddressesGoesBackToShort
/// - not found → unknown/not-found once, interfaces cleared, backoff to the long poll, normal rules when found
///   → aVanishedInstanceIsMarkedNotFoundOnceThenBacksOffToTheLongPoll, anInstanceNeverFoundBacksOffPastTheShortCap, noneFoundMeansNoNetworkInterfacesCallAndBackoff
/// - not yet due → skipped → notYetDueIsNotPolled
/// - dead → dropped; removed → dropped; dying → still polled → deadAndRemovedMachinesStopBeingPolled, dyingMachinesAreStillPolled
/// - manual → running once, never polled; already running not rewritten; becoming manual → untracked
///   → manualMachinesAreMarkedRunningOnceAndNeverPolled, aManualMachineAlreadyRunningIsNotRewritten, aMachineThatBecomesManualIsUntrackedAndMarkedRunning
/// - no instance id → skipped, bumped; batch carries only provisioned ids → unprovisionedIsSkippedAndBumpedAndTheBatchHasOnlyProvisionedIDs
/// - one Instances + one NetworkInterfaces per batch → oneInstancesAndOneNetworkInterfacesCallPerBatch
/// - none found → no NetworkInterfaces call → noneFoundMeansNoNetworkInterfacesCallAndBackoff
/// - provider error → machines bumped, error recorded, engine alive → providerErrorBumpsTheBatchRecordsItAndTheEngineGoesOn
/// - answers align with the ids asked (one per id, in order), checked by one function for both calls → aShortAnswerFromTheProviderIsAnErrorNotASilentSkip,
///   anInstancesAnswerOutOfOrderIsAnErrorNotAMixUp, aNetworkInterfacesAnswerThatDoesNotAlignIsAnError;
///   misalignmentNamesTheCountOrTheFirstResultOutOfPlace, misalignedResultsAreRejected (ProviderClientTests)
/// - what a failure means, decided without the engine (invalidate, throttle, record, retry 1 s … cap, write failed)
///   → FailurePolicyTests (decides: one row per rule; aShortPollBelowOneSecondStartsTheRetriesThere)
/// - machines of an unconfigured provider → error recorded, the rest polled → machinesOfAnUnconfiguredProviderRecordAnErrorAndTheRestArePolled
/// - at most max ids per call (ceil(N/max) calls) → batchesHoldAtMostMaxIDs
/// - batches kept apart per credential and sent with it → batchesAreKeptApartPerCredentialAndSentWithIt
/// - one call in flight per (provider, credential) → oneCallInFlightPerProviderAndCredential, twoConcurrentRoundsKeepOneCallInFlightPerPair (PollerLoopTests)
/// - long-group jitter → jitterSpreadsTheLongGroupWithinTenPercent (PollScheduleTests); full batches → aJitteredSweepGoesOutInFullBatches
/// - schedule survives a restart → restartResumesTheSchedule
/// - throttled → pause for retry-after (or the cap), no bump, on either call → throttlingPausesThePairWithoutBumping, throttlingWithoutAHintPausesThePairForTheShortCap
/// - shim down → machines keep their schedule, polled once it is back → aDownShimLeavesTheScheduleAlone, aShimStillStartingIsWaitedForQuietly
/// - the loop never spins while a pair is paused; a shim serving again wakes it → aThrottledPairNeitherSpinsNorIsPolledDuringItsPause,
///   aShimDownSleepsUntilTheRetryAndWakesTheMomentItServesAgain, aStoreThatFailsEveryReadDoesNotSpinTheLoop (PollerLoopTests)
/// - write first, then remember → aFailedWriteIsNotRememberedSoTheSameAnswerIsWrittenNext, aFailedErrorWriteIsRetriedToo,
///   aFailedInvalidationIsNotRememberedSoItIsWrittenNext (PollerLoopTests)
/// - changes by another process are seen → machinesAddedByAnotherProcessAreSeen
/// - gate: credential missing → missingCredentialMeansNoCloudCall
/// - gate: marked invalid / expired → markedInvalidOrExpiredCredentialsMakeNoCall
/// - gate: ValidateCredential says no → no cloud call, invalidated → validateSaysInvalidSoNothingIsSentAndItIsInvalidated
/// - gate: ValidateCredential Unauthenticated / PermissionDenied → authErrorsFromValidateCredentialInvalidateTheCredential
/// - gate: other ValidateCredential failures → recorded, backed off → otherValidateCredentialFailuresAreRecordedAndBackedOff
/// - Unauthenticated / PermissionDenied from Instances or NetworkInterfaces → invalidated with reason, all its machines paused
///   → unauthenticatedOrPermissionDeniedInvalidatesWithTheReason
/// - updated credential → validated, paused machines polled at once → anUpdatedCredentialIsValidatedAndPausedMachinesArePolledAtOnce
/// - an invalid credential re-checked once a minute, cleared when valid; validated elsewhere; removed; expired
///   → CredentialGateTests; a credential event's "provider/name" read into its key once → theKeyOfACredentialEventIsReadFromItsLabelOnce
/// - secrets never logged → secretsNeverReachTheLogs
/// - the service loop runs on the clock and stops on cancellation → runPollsAsTheClockMovesAndEndsOnCancellation
@Suite("Poller (docs/DESIGN.md §6.2, §6.3)")
struct PollerTests {
    struct Fixture {
        let directory: TemporaryDirectory
        let clock: ManualPollClock
        /// The real SQLite store behind a probe that counts and fails operations.
        let store: ProbeStore
        /// Provider "fake" (credentials "main" and "spare").
        let cloud: TestCloud
        /// Provider "other" (credential "main").
        let otherCloud: TestCloud
        let router: TestRouter
        let poller: Poller
        let logs: LogCapture

        var now: Timestamp { clock.now }

        /// Adds an alive machine on provider "fake" with credential "main".
        func add(
            _ id: String, instance: String? = nil, agent: Machine.AgentStatus = .none, manual: Bool = false,
            provider: String = "fake", credential: String = "main"
        ) async throws {
            try await store.addMachine(Machine(
                id: id, provider: provider, credential: credential, instanceID: instance ?? "i-\(id)", manual: manual, agentStatus: agent))
        }

        /// Adds a machine whose instance runs with `addresses` and polls it
        /// into the long group.
        func addLongGroupMachine(_ id: String, addresses: [String] = ["10.0.0.1"], agent: Machine.AgentStatus = .none) async throws {
            cloud.set("i-\(id)", .running, addresses: addresses)
            try await add(id, agent: agent)
            try await tick()
            try await tick(.seconds(3))
            #expect(try await entry(id)?.group == .long)
        }

        /// Moves time to the machine's due time `polls` times, polling each
        /// time; returns its interval after each poll.
        func intervals(of id: String, polls: Int) async throws -> [Duration] {
            var intervals: [Duration] = []
            for _ in 0..<polls {
                let entry = try #require(try await self.entry(id))
                try await tick(entry.due - now)
                intervals.append(try #require(try await self.entry(id)).interval)
            }
            return intervals
        }

        /// Changes a machine as someone outside the poller would.
        func update(_ id: String, _ change: (inout Machine) -> Void) async throws {
            var machine = try await self.machine(id)
            change(&machine)
            try await store.updateMachine(machine)
        }

        /// The poller's events (source poller) so far.
        func pollerEvents() async throws -> [MachineEvent] {
            try await store.events(after: 0, limit: 10_000).filter { $0.source == .poller }
        }

        func entry(_ id: String) async throws -> ScheduleEntry? {
            try await store.schedule().first { $0.machineID == id }
        }

        func machine(_ id: String) async throws -> Machine {
            try #require(try await store.machine(id: id))
        }

        /// Moves time and runs one poll round.
        @discardableResult
        func tick(_ step: Duration = .zero) async throws -> Int {
            clock.advance(by: step)
            return try await poller.pollOnce()
        }
    }

    static func with(
        settings: PollSettings = PollSettings(longPollJitter: 0), providerSettings: [String: PollSettings] = [:],
        _ body: (Fixture) async throws -> Void
    ) async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = ManualPollClock()
        let logs = LogCapture()
        let sqlite = try SQLiteMachineStore(path: directory.file("machines.db"), clock: clock, logger: logs.logger())
        let store = ProbeStore(sqlite)
        for (provider, name) in [("fake", "main"), ("fake", "spare"), ("other", "main")] {
            try await store.setCredential(StoredCredential(provider: provider, name: name, authType: "access-key", attributes: ["secret-key": "s3cret-value"]))
        }
        let cloud = TestCloud()
        let otherCloud = TestCloud()
        let router = TestRouter([
            "fake": ProviderEndpoint(cloud: .with { $0.type = "fake" }, access: cloud),
            "other": ProviderEndpoint(cloud: .with { $0.type = "other" }, access: otherCloud),
        ])
        let poller = try Poller(config: PollerConfig(
            clock: clock,
            store: store,
            providers: router,
            credentials: StoreCredentialAPI(store: store),
            logger: logs.logger(),
            settings: settings,
            providerSettings: providerSettings,
            watchInterval: .milliseconds(250),
            jitterSeed: 42
        ))
        try await body(Fixture(
            directory: directory, clock: clock, store: store, cloud: cloud, otherCloud: otherCloud, router: router, poller: poller, logs: logs))
    }

    // MARK: - Config

    @Test(arguments: ["clock", "machine store", "provider client", "credential API", "logger"])
    func configValidationNamesTheMissingPiece(missing: String) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = ManualPollClock()
        let store = try SQLiteMachineStore(path: directory.file("m.db"), clock: clock, logger: LogCapture().logger())
        var config = PollerConfig(
            clock: clock, store: store, providers: StaticProviderRouter([:]),
            credentials: StoreCredentialAPI(store: store), logger: LogCapture().logger()
        )
        switch missing {
        case "clock": config.clock = nil
        case "machine store": config.store = nil
        case "provider client": config.providers = nil
        case "credential API": config.credentials = nil
        default: config.logger = nil
        }
        #expect(throws: PollerConfig.Invalid(description: "poller config: missing \(missing)")) { try config.validate() }
        #expect(throws: PollerConfig.Invalid.self) { _ = try Poller(config: config) }
    }

    @Test(arguments: [
        (PollSettings(maxIDsPerCall: 0), [:], "poller config: max ids per call must be at least 1"),
        (PollSettings(), ["aws": PollSettings(longPollJitter: 1.5)], "poller config: provider aws: long poll jitter must be in [0, 1)"),
    ] as [(PollSettings, [String: PollSettings], String)])
    func badSettingsAreNamed(settings: PollSettings, providerSettings: [String: PollSettings], message: String) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = ManualPollClock()
        let store = try SQLiteMachineStore(path: directory.file("m.db"), clock: clock, logger: LogCapture().logger())
        let config = PollerConfig(
            clock: clock, store: store, providers: StaticProviderRouter([:]),
            credentials: StoreCredentialAPI(store: store), logger: LogCapture().logger(),
            settings: settings, providerSettings: providerSettings
        )
        #expect(throws: PollerConfig.Invalid(description: message)) { try config.validate() }
    }

    // MARK: - Scheduling

    @Test func newMachineJoinsTheShortGroup() async throws {
        try await Self.with { f in
            try await f.add("m1")
            try await f.tick()
            let entry = try await f.entry("m1")
            #expect(entry?.group == .short && entry?.interval == .seconds(3) && entry?.due == f.now + .seconds(3))
            #expect(f.cloud.calls.isEmpty, "not due yet: nothing polled")
        }
    }

    @Test func backoffWhileAllocatingThreeSixTwelve() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .allocating)
            try await f.add("m1")
            try await f.tick()
            #expect(try await f.intervals(of: "m1", polls: 6) == [6, 12, 24, 48, 60, 60].map { Duration.seconds($0) })
        }
    }

    @Test func runningWithAddressesMovesToTheLongGroupAndStatusIsWrittenOnce() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))
            let machine = try await f.machine("m1")
            #expect(machine.instanceStatus.state == .running)
            #expect(machine.addresses.map(\.value) == ["10.0.0.1"])
            #expect(try await f.entry("m1")?.group == .long)
            let events = try await f.pollerEvents()
            #expect(events.map(\.kind) == [.instanceStatusChanged, .addressesChanged])
            #expect(events.map { [$0.oldValue, $0.newValue] } == [["unspecified", "running"], ["", "10.0.0.1"]])
            #expect(try await f.store.statusHistory(machineID: "m1").map(\.state) == [.running])
            // Same answer again: nothing written.
            try await f.tick(.seconds(900))
            #expect(try await f.pollerEvents() == events)
            #expect(f.cloud.calls("Instances").count == 2)
        }
    }

    @Test func thePollersOwnWritesDoNotResetTheBackoff() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .allocating)
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))  // writes status allocating
            f.cloud.set("i-m1", .provisioning)
            try await f.tick(.seconds(6))  // writes status provisioning
            try await f.tick()  // reads the machine-polled events it wrote
            #expect(try await f.pollerEvents().map(\.kind) == [.instanceStatusChanged, .instanceStatusChanged])
            #expect(try await f.entry("m1")?.interval == .seconds(12), "still backing off")
        }
    }

    @Test func pendingAgentStaysShortAndBacksOff() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1", agent: .pending)
            try await f.tick()
            try await f.tick(.seconds(3))
            let entry = try await f.entry("m1")
            #expect(entry?.group == .short && entry?.interval == .seconds(6))
        }
    }

    @Test func longGroupMachineThatLosesItsAddressesGoesBackToShort() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))
            f.cloud.set("i-m1", .running)
            try await f.tick(.seconds(900))
            let entry = try await f.entry("m1")
            #expect(entry?.group == .short && entry?.interval == .seconds(3))
        }
    }

    @Test func changeEventResetsATrackedMachine() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .provisioning)
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))
            try await f.tick(.seconds(6))
            #expect(try await f.entry("m1")?.interval == .seconds(12))
            var machine = try await f.machine("m1")
            machine.agentStatus = .started
            try await f.store.updateMachine(machine)
            try await f.tick()
            let entry = try await f.entry("m1")
            #expect(entry?.interval == .seconds(3) && entry?.due == f.now + .seconds(3))
        }
    }

    @Test func machinesAddedByAnotherProcessAreSeen() async throws {
        try await Self.with { f in
            try await f.tick()
            // Another process writing the same database file.
            let other = try SQLiteMachineStore(path: f.store.inner.path, clock: f.clock, logger: LogCapture().logger())
            try await other.addMachine(Machine(id: "m9", provider: "fake", credential: "main", instanceID: "i-m9"))
            f.cloud.set("i-m9", .running)
            try await f.tick()
            #expect(try await f.entry("m9")?.group == .short)
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").map(\.ids) == [["i-m9"]])
        }
    }

    @Test func notYetDueIsNotPolled() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running)
            try await f.add("m1")
            try await f.tick()
            #expect(try await f.tick(.seconds(2)) == 0)
            #expect(try await f.tick(.seconds(1)) > 0)
        }
    }

    @Test func deadAndRemovedMachinesStopBeingPolled() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running)
            f.cloud.set("i-m2", .running)
            try await f.add("m1")
            try await f.add("m2")
            try await f.tick()
            var m1 = try await f.machine("m1")
            m1.life = .dead
            try await f.store.updateMachine(m1)
            try await f.store.removeMachine(id: "m2")
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").isEmpty)
            #expect(try await f.entry("m1") == nil)
        }
    }

    @Test func manualMachinesAreMarkedRunningOnceAndNeverPolled() async throws {
        try await Self.with { f in
            try await f.add("m1", manual: true)
            try await f.tick()
            let machine = try await f.machine("m1")
            #expect(machine.instanceStatus.state == .running && machine.instanceStatus.message == "Manually provisioned machine")
            let events = try await f.store.latestRevision()
            try await f.tick(.seconds(60))
            #expect(try await f.store.latestRevision() == events, "set once")
            #expect(f.cloud.calls.isEmpty)
        }
    }

    @Test func unprovisionedIsSkippedAndBumpedAndTheBatchHasOnlyProvisionedIDs() async throws {
        try await Self.with { f in
            f.cloud.set("i-m2", .running)
            try await f.add("m1", instance: "")
            try await f.add("m2")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").map(\.ids) == [["i-m2"]])
            #expect(try await f.entry("m1")?.interval == .seconds(6))
        }
    }

    @Test func oneInstancesAndOneNetworkInterfacesCallPerBatch() async throws {
        try await Self.with { f in
            for index in 0..<5 {
                f.cloud.set("i-m\(index)", .running, addresses: ["10.0.0.\(index)"])
                try await f.add("m\(index)")
            }
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").count == 1)
            #expect(f.cloud.calls("NetworkInterfaces").count == 1)
            #expect(f.cloud.calls("NetworkInterfaces")[0].ids.count == 5)
        }
    }

    @Test func noneFoundMeansNoNetworkInterfacesCallAndBackoff() async throws {
        try await Self.with { f in
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").count == 1)
            #expect(f.cloud.calls("NetworkInterfaces").isEmpty)
            #expect(try await f.entry("m1")?.interval == .seconds(6))
        }
    }

    @Test func providerErrorBumpsTheBatchRecordsItAndTheEngineGoesOn() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1")
            try await f.tick()
            f.cloud.fail("Instances", with: RPCError(.unavailable, "cloud down"))
            try await f.tick(.seconds(3))
            #expect(try await f.entry("m1")?.interval == .seconds(6))
            #expect(try await f.machine("m1").pollError == "Instances failed: Unavailable: cloud down")
            f.cloud.fail("Instances", with: nil)
            try await f.tick(.seconds(6))
            #expect(try await f.machine("m1").pollError == nil)
            #expect(try await f.entry("m1")?.group == .long)
        }
    }

    @Test func batchesHoldAtMostMaxIDs() async throws {
        try await Self.with(settings: PollSettings(longPollJitter: 0, maxIDsPerCall: 7)) { f in
            for index in 0..<30 {
                f.cloud.set("i-m\(index)", .running)
                try await f.add("m\(index)")
            }
            try await f.tick()
            try await f.tick(.seconds(3))
            let batches = f.cloud.calls("Instances")
            #expect(batches.count == 5)  // ceil(30 / 7)
            #expect(batches.allSatisfy { $0.ids.count <= 7 })
            #expect(Set(batches.flatMap(\.ids)).count == 30)
        }
    }

    /// A provider's own `poll:` block (a rate-limited account polled more
    /// slowly, in smaller calls): its machines follow it, the others the
    /// config's settings.
    @Test func aProviderWithSettingsOfItsOwnIsPolledByThem() async throws {
        let slow = PollSettings(shortPoll: .seconds(5), shortPollCap: .seconds(20), longPoll: .seconds(3600), longPollJitter: 0, maxIDsPerCall: 3)
        try await Self.with(settings: PollSettings(longPollJitter: 0, maxIDsPerCall: 200), providerSettings: ["other": slow]) { f in
            for index in 0..<7 {
                f.cloud.set("i-f\(index)", .running, addresses: ["10.0.0.\(index)"])
                try await f.add("f\(index)")
                f.otherCloud.set("i-o\(index)", .running, addresses: ["10.1.0.\(index)"])
                try await f.add("o\(index)", provider: "other")
            }
            try await f.tick()
            #expect(try await f.entry("f0")?.interval == .seconds(3), "the config's short poll")
            #expect(try await f.entry("o0")?.interval == .seconds(5), "the provider's own short poll")
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").map(\.ids.count) == [7], "one call of up to 200 ids")
            #expect(f.otherCloud.calls("Instances").isEmpty, "not due before its own 5 s")
            try await f.tick(.seconds(2))
            #expect(f.otherCloud.calls("Instances").map(\.ids.count).sorted() == [1, 3, 3], "calls of at most 3 ids")
            #expect(try await f.entry("f0")?.group == .long)
            #expect(try await f.entry("f0")?.interval == .seconds(15 * 60))
            #expect(try await f.entry("o0")?.group == .long)
            #expect(try await f.entry("o0")?.interval == .seconds(3600), "the provider's own long poll")
        }
    }

    @Test func oneCallInFlightPerProviderAndCredential() async throws {
        try await Self.with(settings: PollSettings(longPollJitter: 0, maxIDsPerCall: 2)) { f in
            for index in 0..<10 {
                f.cloud.set("i-m\(index)", .running, addresses: ["10.0.0.\(index)"])
                try await f.add("m\(index)")
            }
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").count == 5)
            #expect(f.cloud.maxInFlight == 1)
        }
    }

    @Test func restartResumesTheSchedule() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let clock = ManualPollClock()
        let cloud = TestCloud()
        cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
        func poller(_ store: SQLiteMachineStore) throws -> Poller {
            try Poller(config: PollerConfig(
                clock: clock, store: store,
                providers: StaticProviderRouter(["fake": ProviderEndpoint(cloud: .init(), access: cloud)]),
                credentials: StoreCredentialAPI(store: store), logger: LogCapture().logger(),
                settings: PollSettings(longPollJitter: 0)
            ))
        }
        do {
            let store = try SQLiteMachineStore(path: directory.file("m.db"), clock: clock, logger: LogCapture().logger())
            try await store.setCredential(StoredCredential(provider: "fake", name: "main", authType: "t", attributes: [:]))
            try await store.addMachine(Machine(id: "m1", provider: "fake", credential: "main", instanceID: "i-m1"))
            let first = try poller(store)
            try await first.pollOnce()
            clock.advance(by: .seconds(3))
            try await first.pollOnce()
            #expect(try await store.schedule().first?.group == .long)
        }
        // A new controller on the same database: the machine stays long.
        let store = try SQLiteMachineStore(path: directory.file("m.db"), clock: clock, logger: LogCapture().logger())
        let second = try poller(store)
        cloud.resetCalls()
        clock.advance(by: .seconds(3))
        #expect(try await second.pollOnce() == 0, "a restart does not send the fleet back to 3 s polling")
        #expect(try await store.schedule().first?.group == .long)
    }

    @Test func throttlingPausesThePairWithoutBumping() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running)
            try await f.add("m1")
            try await f.tick()
            f.cloud.fail("Instances", with: RPCError(.resourceExhausted, "slow down", metadata: [(RPCError.retryAfterKey, "10000")]))
            try await f.tick(.seconds(3))
            #expect(try await f.entry("m1")?.interval == .seconds(3), "not bumped")
            f.cloud.fail("Instances", with: nil)
            f.cloud.resetCalls()
            try await f.tick(.seconds(5))
            #expect(f.cloud.calls.isEmpty, "paused for the retry-after hint")
            try await f.tick(.seconds(5))
            #expect(f.cloud.calls("Instances").count == 1)
        }
    }

    @Test(arguments: ["ValidateCredential", "Instances", "NetworkInterfaces"])
    func aDownShimLeavesTheScheduleAlone(method: String) async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .allocating)
            f.cloud.set("i-m2", .running, addresses: ["10.0.0.2"])
            try await f.add("m1")
            try await f.add("m2", agent: .pending)
            try await f.tick()
            try await f.tick(.seconds(3))
            let before = (try await f.entry("m1"), try await f.entry("m2"))
            #expect(before.0?.interval == .seconds(6))
            #expect(try await f.machine("m2").interfaces.count == 1)

            f.cloud.fail(method, with: ShimUnavailable(provider: "fake", reason: "no shim is running"))
            try await f.tick(.seconds(6))
            #expect(try await f.entry("m1") == before.0, "not bumped: still due")
            #expect(try await f.entry("m2") == before.1)
            #expect(try await f.machine("m1").pollError == nil, "a down shim is not the cloud's answer")
            #expect(f.logs.all.filter { $0.message.hasPrefix("provider unavailable") }.count == 1)
            f.cloud.resetCalls()
            try await f.tick(.milliseconds(500))
            #expect(f.cloud.calls.isEmpty, "tried again after a short pause, not in a busy loop")
            try await f.tick(.milliseconds(500))
            #expect(f.cloud.calls(method).count == 1, "retried once the pause ends")
            try await f.tick(.milliseconds(1999))
            #expect(f.cloud.calls(method).count == 1, "the next try waits twice as long")
            try await f.tick(.milliseconds(1))
            #expect(f.cloud.calls(method).count == 2)
            #expect(f.logs.all.filter { $0.message.hasPrefix("provider unavailable") }.count == 1, "logged once while down")

            // The shim serves again: polled at once, not at the next try.
            f.cloud.fail(method, with: nil)
            f.cloud.resetCalls()
            f.router.serve("fake")
            try await f.tick()
            #expect(f.cloud.calls("Instances").count == 1, "polled as soon as the shim is back")
            #expect(try await f.entry("m1")?.interval == .seconds(12), "the backoff goes on from where it was")
            #expect(f.logs.all.contains { $0.message == "provider available again" })
        }
    }

    @Test func aJitteredSweepGoesOutInFullBatches() async throws {
        try await Self.with(settings: PollSettings(longPollJitter: 0.1, maxIDsPerCall: 10)) { f in
            for index in 1...25 {
                f.cloud.set("i-m\(index)", .running, addresses: ["10.0.0.\(index)"])
                try await f.add("m\(index)")
            }
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(try await f.store.schedule().allSatisfy { $0.group == .long })
            f.cloud.resetCalls()
            // Due times are spread over 13.5 … 16.5 min; walk through the window.
            try await f.tick(.seconds(13 * 60 + 29))
            for _ in 0..<200 { try await f.tick(.seconds(1)) }
            let calls = f.cloud.calls("Instances")
            #expect(calls.count == 3, "ceil(25 / 10) calls, not one per due time: \(calls.map(\.ids.count))")
            #expect(calls.map(\.ids.count).sorted() == [5, 10, 10])
            #expect(Set(calls.flatMap(\.ids)).count == 25, "every machine once")
        }
    }

    @Test func aShimStillStartingIsWaitedForQuietly() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1")
            try await f.tick()
            f.cloud.fail("ValidateCredential", with: ShimUnavailable(provider: "fake", reason: "its shim is starting", starting: true))
            try await f.tick(.seconds(3))
            #expect(try await f.entry("m1")?.interval == .seconds(3), "not bumped")
            #expect(!f.logs.all.contains { $0.level >= .warning }, "starting up is not a problem")
            f.cloud.fail("ValidateCredential", with: nil)
            try await f.tick(.seconds(1))
            #expect(try await f.entry("m1")?.group == .long, "polled as soon as the shim serves")
        }
    }

    // MARK: - Credential gate

    @Test func missingCredentialMeansNoCloudCall() async throws {
        try await Self.with { f in
            try await f.store.addMachine(Machine(id: "m1", provider: "fake", credential: "nobody", instanceID: "i-m1"))
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls.isEmpty)
            #expect(try await f.machine("m1").pollError == "credential invalid: credential fake/nobody does not exist")
        }
    }

    @Test func validateSaysInvalidSoNothingIsSentAndItIsInvalidated() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running)
            f.cloud.setValidity(false, reason: "AuthFailure: key revoked")
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls.map(\.method) == ["ValidateCredential"])
            #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == "AuthFailure: key revoked")
            #expect(try await f.machine("m1").pollError == "credential invalid: AuthFailure: key revoked")
            // Nothing more goes out with it until it changes or its re-check
            // comes, a minute on (CredentialGateTests).
            try await f.tick(.seconds(59))
            #expect(f.cloud.calls.count == 1)
        }
    }

    @Test func markedInvalidOrExpiredCredentialsMakeNoCall() async throws {
        try await Self.with { f in
            try await f.store.setCredential(StoredCredential(provider: "fake", name: "old", authType: "t", attributes: [:],
                                                             expiresAt: f.now + .seconds(1)))
            try await f.store.setCredential(StoredCredential(provider: "fake", name: "bad", authType: "t", attributes: [:]))
            try await f.store.invalidateCredential(provider: "fake", name: "bad", reason: "revoked by operator")
            try await f.store.addMachine(Machine(id: "m1", provider: "fake", credential: "old", instanceID: "i-m1"))
            try await f.store.addMachine(Machine(id: "m2", provider: "fake", credential: "bad", instanceID: "i-m2"))
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls.isEmpty)
            #expect(try await f.machine("m1").pollError?.hasPrefix("credential invalid: expired") == true)
            #expect(try await f.machine("m2").pollError == "credential invalid: revoked by operator")
        }
    }

    @Test(arguments: [RPCStatusCode.unauthenticated, .permissionDenied], ["Instances", "NetworkInterfaces"])
    func unauthenticatedOrPermissionDeniedInvalidatesWithTheReason(code: RPCStatusCode, method: String) async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            f.cloud.set("i-m2", .running, addresses: ["10.0.0.2"])
            try await f.add("m1")
            try await f.add("m2")
            try await f.tick()
            f.cloud.fail(method, with: RPCError(code, "AuthFailure: signature mismatch"))
            try await f.tick(.seconds(3))
            #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == "AuthFailure: signature mismatch")
            #expect(try await f.machine("m2").pollError == "credential invalid: AuthFailure: signature mismatch")
            f.cloud.resetCalls()
            try await f.tick(.seconds(59))
            #expect(f.cloud.calls.isEmpty, "every machine using it is paused (until its re-check, a minute on)")
        }
    }

    @Test func anUpdatedCredentialIsValidatedAndPausedMachinesArePolledAtOnce() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            f.cloud.setValidity(false, reason: "expired token")
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(try await f.machine("m1").pollError == "credential invalid: expired token")
            f.cloud.setValidity(true)
            f.cloud.resetCalls()
            try await f.store.setCredential(StoredCredential(provider: "fake", name: "main", authType: "access-key", attributes: ["secret-key": "new"]))
            try await f.tick()  // no time passes
            #expect(f.cloud.calls.map(\.method) == ["ValidateCredential", "Instances", "NetworkInterfaces"])
            #expect(try await f.machine("m1").pollError == nil)
        }
    }

    @Test func secretsNeverReachTheLogs() async throws {
        try await Self.with { f in
            f.cloud.setValidity(false, reason: "bad key")
            f.cloud.set("i-m1", .running)
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(!f.logs.all.isEmpty)
            #expect(!f.logs.all.contains { "\($0.message) \($0.metadata)".contains("s3cret-value") })
        }
    }
}

@Suite("Poller service loop")
struct PollerRunTests {
    @Test func runPollsAsTheClockMovesAndEndsOnCancellation() async throws {
        try await PollerTests.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1")
            let running = Task { try await f.poller.run() }
            await f.clock.waitForSleepers()  // first round done, parked
            f.clock.advance(by: .seconds(3))  // wakes the loop; the machine is due
            try await withTimeout(.seconds(10), "the poller to park again") { await f.clock.waitForSleepers() }
            #expect(f.cloud.calls("Instances").count == 1)
            #expect(try await f.entry("m1")?.group == .long)
            running.cancel()
            _ = await running.result
        }
    }
}
