@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Logging
import Testing
import TestSupport

/// The rest of the scheduling and gate rules, one rule per test, on the same fixture as
/// ``PollerTests``: vanished instances, Juju's agent rule, what Juju shows,
/// outside changes, and every error path of the gate and the calls.
extension PollerTests {
    // MARK: - Vanished and not-found instances

    @Test func aVanishedInstanceIsMarkedNotFoundOnceThenBacksOffToTheLongPoll() async throws {
        try await Self.with { f in
            try await f.addLongGroupMachine("m1")
            let before = try await f.pollerEvents().count

            f.cloud.remove("i-m1")
            try await f.tick(.seconds(900))
            let machine = try await f.machine("m1")
            #expect(machine.instanceStatus.state == .unknown)
            #expect(machine.instanceStatus.rawStatus == "not-found")
            #expect(machine.instanceStatus.message == "instance not found by the provider")
            #expect(machine.interfaces.isEmpty, "its interfaces are cleared")
            let events = try await f.pollerEvents().dropFirst(before)
            #expect(events.map(\.kind) == [.instanceStatusChanged, .addressesChanged])
            #expect(events.map { [$0.oldValue, $0.newValue] } == [
                ["running", "unknown (not-found): instance not found by the provider"], ["10.0.0.1", ""],
            ])
            #expect(f.logs.all.contains {
                $0.level == .info && $0.message == "instance status changed from running to unknown (not-found): instance not found by the provider"
            })
            #expect(try await f.entry("m1")?.interval == .seconds(3), "a long-group machine that vanished is confirmed quickly")

            // Confirmed quickly, then costs almost nothing; written once.
            #expect(try await f.intervals(of: "m1", polls: 10) == [6, 12, 24, 48, 60, 120, 240, 480, 900, 900].map { Duration.seconds($0) })
            #expect(try await f.pollerEvents().count == before + 2, "not-found is written once")
            #expect(try await f.entry("m1")?.group == .short)

            // Found again: normal rules at once.
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.9"])
            try await f.tick(.seconds(900))
            #expect(try await f.machine("m1").instanceStatus.state == .running)
            #expect(try await f.entry("m1")?.group == .long)
        }
    }

    @Test func anInstanceNeverFoundBacksOffPastTheShortCap() async throws {
        try await Self.with { f in
            try await f.add("m1")
            try await f.tick()
            #expect(try await f.intervals(of: "m1", polls: 8) == [6, 12, 24, 48, 60, 120, 240, 480].map { Duration.seconds($0) })
            #expect(try await f.machine("m1").instanceStatus.isNotFound)
            // Found at last, still allocating: back to the short cap, not 960 s.
            f.cloud.set("i-m1", .allocating)
            try await f.tick(.seconds(480))
            #expect(try await f.entry("m1")?.interval == .seconds(60))
        }
    }

    @Test(arguments: ["unknown", "not found"])
    func aLongGroupMachineThatBecomesUnknownOrNotFoundGoesBackToShort(change: String) async throws {
        try await Self.with { f in
            try await f.addLongGroupMachine("m1")
            if change == "unknown" { f.cloud.set("i-m1", .unknown, addresses: ["10.0.0.1"]) } else { f.cloud.remove("i-m1") }
            try await f.tick(.seconds(900))
            let entry = try await f.entry("m1")
            #expect(entry?.group == .short && entry?.interval == .seconds(3) && entry?.due == f.now + .seconds(3))
        }
    }

    // MARK: - Juju's agent rule

    @Test func everyAgentStartIsRecordedAndResetsTheMachine() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1", agent: .pending)
            try await f.tick()
            for step in [3, 6, 12] { try await f.tick(.seconds(Int64(step))) }
            #expect(try await f.entry("m1")?.interval == .seconds(24), "a pending agent keeps it short, backing off")

            let started = try await f.store.reportAgentStatus(machineID: "m1", .started)
            #expect(started.agentStartedAt == f.now)
            try await f.tick()
            #expect(try await f.entry("m1")?.interval == .seconds(3), "an agent start resets it")
            try await f.tick(.seconds(3))
            #expect(try await f.entry("m1")?.group == .long)

            // The agent restarts: it reports started again.
            try await f.tick(.seconds(100))
            let restarted = try await f.store.reportAgentStatus(machineID: "m1", .started)
            #expect(restarted.agentStartedAt == f.now && restarted.agentStartedAt != started.agentStartedAt)
            #expect(try await f.machine("m1").agentStartedAt == f.now, "every start is recorded in the store")
            try await f.tick()
            let entry = try await f.entry("m1")
            #expect(entry?.group == .short && entry?.interval == .seconds(3), "a restart counts as a start")
        }
    }

    @Test(arguments: [Machine.AgentStatus.down, .error, .pending])
    func anAgentThatStopsDoesNotMoveALongGroupMachine(status: Machine.AgentStatus) async throws {
        try await Self.with { f in
            try await f.addLongGroupMachine("m1", agent: .started)
            let long = try #require(try await f.entry("m1"))

            try await f.store.reportAgentStatus(machineID: "m1", status)
            try await f.tick(.seconds(60))
            #expect(try await f.entry("m1") == long, "not reset, not moved")
            try await f.tick(long.due - f.now)
            let next = try await f.entry("m1")
            #expect(next?.group == .long && next?.interval == .seconds(900), "stays in the long group at its next poll")
        }
    }

    // MARK: - What Juju shows

    @Test func aProvisioningErrorSetsTheAgentToErrorWithTheProvidersMessage() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .provisioningError, message: "InsufficientInstanceCapacity")
            try await f.add("m1", agent: .pending)
            try await f.tick()
            try await f.tick(.seconds(3))
            let machine = try await f.machine("m1")
            #expect(machine.agentStatus == .error)
            #expect(machine.agentMessage == "InsufficientInstanceCapacity")
            let agentEvents = try await f.pollerEvents().filter { $0.kind == .agentStatusChanged }
            #expect(agentEvents.map { [$0.oldValue, $0.newValue] } == [["pending", "error: InsufficientInstanceCapacity"]])
            // Not written again while nothing changes, and the poller's own
            // write does not reset the machine.
            try await f.tick(.seconds(6))
            #expect(try await f.pollerEvents().filter { $0.kind == .agentStatusChanged }.count == 1)
            #expect(try await f.entry("m1")?.interval == .seconds(12))
        }
    }

    @Test func statusChangesAreLoggedKeptInTheHistoryAndCarryOldAndNewValues() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .allocating)
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))
            f.cloud.set("i-m1", .provisioning, message: "booting")
            try await f.tick(.seconds(6))
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1", "10.0.0.2"])
            try await f.tick(.seconds(12))
            let history = try await f.store.statusHistory(machineID: "m1")
            #expect(history.map(\.summary) == ["running", "provisioning: booting", "allocating"], "newest first")
            let events = try await f.pollerEvents()
            #expect(events.filter { $0.kind == .instanceStatusChanged }.map(\.newValue) == ["allocating", "provisioning: booting", "running"])
            #expect(events.filter { $0.kind == .addressesChanged }.map(\.newValue) == ["10.0.0.1,10.0.0.2"])
            let infos = f.logs.all.filter { $0.level == .info }.map(\.message)
            #expect(infos.contains("instance status changed from provisioning: booting to running"))
            #expect(f.logs.all.contains { $0.level == .info && $0.message == "machine has new addresses" && $0.metadata["addresses"] == "10.0.0.1,10.0.0.2" })
        }
    }

    // MARK: - Outside changes

    @Test func aChangedInstanceIDIsPolledWithTheNewID() async throws {
        try await Self.with { f in
            f.cloud.set("i-old", .running, addresses: ["10.0.0.1"])
            f.cloud.set("i-new", .running, addresses: ["10.0.0.2"])
            try await f.add("m1", instance: "i-old")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(try await f.entry("m1")?.group == .long)
            try await f.update("m1") { $0.instanceID = "i-new" }
            try await f.tick()
            #expect(try await f.entry("m1")?.interval == .seconds(3), "reset by the change")
            f.cloud.resetCalls()
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").map(\.ids) == [["i-new"]])
            #expect(try await f.machine("m1").addressValues == ["10.0.0.2"])
        }
    }

    @Test(arguments: ["credential", "provider"])
    func aChangedPairIsPolledWithTheNewPair(change: String) async throws {
        try await Self.with { f in
            f.otherCloud.set("i-m1", .running, addresses: ["10.9.0.1"])
            try await f.addLongGroupMachine("m1")
            try await f.update("m1") { machine in
                if change == "credential" { machine.credential = "spare" } else { machine.provider = "other" }
            }
            try await f.tick()
            #expect(try await f.entry("m1")?.interval == .seconds(3), "reset by the change")
            f.cloud.resetCalls()
            try await f.tick(.seconds(3))
            if change == "credential" {
                #expect(f.cloud.calls("Instances").map(\.credential) == ["spare"])
            } else {
                #expect(f.cloud.calls.isEmpty)
                #expect(f.otherCloud.calls("Instances").map(\.ids) == [["i-m1"]])
                #expect(try await f.machine("m1").addressValues == ["10.9.0.1"])
            }
        }
    }

    @Test(arguments: ["dying", "instance id", "credential", "agent start"])
    func aLongGroupMachineIsResetByAnOutsideChange(change: String) async throws {
        try await Self.with { f in
            f.cloud.set("i-m1b", .running, addresses: ["10.0.0.2"])
            try await f.addLongGroupMachine("m1", agent: .started)
            try await f.tick(.seconds(60))
            switch change {
            case "dying": try await f.update("m1") { $0.life = .dying }
            case "instance id": try await f.update("m1") { $0.instanceID = "i-m1b" }
            case "credential": try await f.update("m1") { $0.credential = "spare" }
            default: try await f.store.reportAgentStatus(machineID: "m1", .started)
            }
            try await f.tick()
            let entry = try await f.entry("m1")
            #expect(entry?.group == .short && entry?.interval == .seconds(3) && entry?.due == f.now + .seconds(3))
        }
    }

    @Test func dyingMachinesAreStillPolled() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1")
            try await f.tick()
            try await f.update("m1") { $0.life = .dying }
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls("Instances").map(\.ids) == [["i-m1"]])
            #expect(try await f.entry("m1")?.group == .long)
        }
    }

    @Test func aManualMachineAlreadyRunningIsNotRewritten() async throws {
        try await Self.with { f in
            try await f.store.addMachine(Machine(
                id: "m1", provider: "fake", credential: "main", manual: true,
                instanceStatus: InstanceStatusRecord(state: .running, rawStatus: "up", message: "set by the operator")))
            try await f.tick()
            let machine = try await f.machine("m1")
            #expect(machine.instanceStatus.rawStatus == "up" && machine.instanceStatus.message == "set by the operator")
            #expect(try await f.pollerEvents().isEmpty)
            #expect(try await f.entry("m1") == nil)
        }
    }

    @Test func aMachineThatBecomesManualIsUntrackedAndMarkedRunning() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .allocating)
            try await f.add("m1")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(try await f.entry("m1") != nil)
            try await f.update("m1") { $0.manual = true }
            try await f.tick()
            #expect(try await f.entry("m1") == nil)
            #expect(try await f.store.schedule().isEmpty, "its schedule entry is gone from the store too")
            let machine = try await f.machine("m1")
            #expect(machine.instanceStatus.state == .running && machine.instanceStatus.message == "Manually provisioned machine")
            f.cloud.resetCalls()
            try await f.tick(.seconds(600))
            #expect(f.cloud.calls.isEmpty)
        }
    }

    // MARK: - Errors of the gate and the calls

    @Test(arguments: [RPCStatusCode.unauthenticated, .permissionDenied])
    func authErrorsFromValidateCredentialInvalidateTheCredential(code: RPCStatusCode) async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running)
            try await f.add("m1")
            try await f.add("m2")
            try await f.tick()
            f.cloud.fail("ValidateCredential", with: RPCError(code, "InvalidClientTokenId"))
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls.map(\.method) == ["ValidateCredential"])
            #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == "InvalidClientTokenId")
            #expect(try await f.machine("m2").pollError == "credential invalid: InvalidClientTokenId")
        }
    }

    @Test func otherValidateCredentialFailuresAreRecordedAndBackedOff() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running)
            try await f.add("m1")
            try await f.tick()
            f.cloud.fail("ValidateCredential", with: RPCError(.unavailable, "sts.amazonaws.com unreachable"))
            try await f.tick(.seconds(3))
            #expect(f.cloud.calls.map(\.method) == ["ValidateCredential"])
            #expect(try await f.machine("m1").pollError == "ValidateCredential failed: Unavailable: sts.amazonaws.com unreachable")
            #expect(try await f.entry("m1")?.interval == .seconds(6))
            #expect(try await f.store.credential(provider: "fake", name: "main")?.invalidReason == nil, "not the credential's fault")
        }
    }

    @Test(arguments: ["Instances", "NetworkInterfaces"])
    func throttlingWithoutAHintPausesThePairForTheShortCap(method: String) async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
            try await f.add("m1", agent: .pending)
            try await f.tick()
            f.cloud.fail(method, with: RPCError(.resourceExhausted, "RequestLimitExceeded"))
            try await f.tick(.seconds(3))
            #expect(try await f.entry("m1")?.interval == .seconds(3), "not bumped")
            #expect(try await f.machine("m1").pollError == nil)
            f.cloud.fail(method, with: nil)
            f.cloud.resetCalls()
            try await f.tick(.seconds(59))
            #expect(f.cloud.calls.isEmpty, "paused for the short-poll cap, 60 s")
            try await f.tick(.seconds(1))
            #expect(f.cloud.calls(method).count == 1)
        }
    }

    @Test func batchesAreKeptApartPerCredentialAndSentWithIt() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running)
            f.cloud.set("i-m2", .running)
            f.cloud.set("i-m3", .running)
            try await f.add("m1", credential: "main")
            try await f.add("m2", credential: "spare")
            try await f.add("m3", credential: "main")
            try await f.tick()
            try await f.tick(.seconds(3))
            let calls = f.cloud.calls("Instances").sorted { $0.credential < $1.credential }
            #expect(calls.map(\.credential) == ["main", "spare"])
            #expect(calls.map { $0.ids.sorted() } == [["i-m1", "i-m3"], ["i-m2"]])
            #expect(Set(f.cloud.calls("ValidateCredential").map(\.credential)) == ["main", "spare"])
        }
    }

    @Test func machinesOfAnUnconfiguredProviderRecordAnErrorAndTheRestArePolled() async throws {
        try await Self.with { f in
            f.cloud.set("i-m1", .running)
            try await f.add("m1")
            try await f.add("lost", provider: "nowhere")
            try await f.tick()
            try await f.tick(.seconds(3))
            #expect(try await f.machine("lost").pollError == "provider nowhere is not configured")
            #expect(try await f.entry("lost")?.interval == .seconds(6))
            #expect(f.cloud.calls("Instances").map(\.ids) == [["i-m1"]])
        }
    }

    /// m1 and m2, running with an address each, added; `spoil` breaks the
    /// cloud's answers; then their first poll.
    static func pollTwo(_ f: Fixture, answering spoil: (TestCloud) -> Void) async throws {
        f.cloud.set("i-m1", .running, addresses: ["10.0.0.1"])
        f.cloud.set("i-m2", .running, addresses: ["10.0.0.2"])
        try await f.add("m1")
        try await f.add("m2")
        try await f.tick()
        spoil(f.cloud)
        try await f.tick(.seconds(3))
    }

    @Test func aShortAnswerFromTheProviderIsAnErrorNotASilentSkip() async throws {
        try await Self.with { f in
            try await Self.pollTwo(f) { $0.answerFewer(1) }
            #expect(try await f.machine("m2").pollError == "Instances failed: the provider answered 1 results for 2 ids")
            #expect(try await f.entry("m1")?.interval == .seconds(6) && f.cloud.calls("Instances").count == 1)
        }
    }

    @Test func anInstancesAnswerOutOfOrderIsAnErrorNotAMixUp() async throws {
        try await Self.with { f in
            try await Self.pollTwo(f) { $0.answerReversed(in: "Instances") }
            for id in ["m1", "m2"] {
                let machine = try await f.machine(id)
                #expect(machine.pollError == "Instances failed: result 0 is for i-m2, expected i-m1")
                #expect(machine.instanceStatus.rawStatus.isEmpty, "no status from an answer about another instance")
                #expect(try await f.entry(id)?.interval == .seconds(6))
            }
            #expect(f.cloud.calls("NetworkInterfaces").isEmpty)
        }
    }

    @Test func aNetworkInterfacesAnswerThatDoesNotAlignIsAnError() async throws {
        try await Self.with { f in
            try await Self.pollTwo(f) { $0.answerFewer(1, in: "NetworkInterfaces") }
            for id in ["m1", "m2"] {
                let machine = try await f.machine(id)
                #expect(machine.pollError == "NetworkInterfaces failed: the provider answered 1 results for 2 ids")
                #expect(machine.addresses.isEmpty && machine.instanceStatus.rawStatus.isEmpty, "nothing of the batch is written")
                #expect(try await f.entry(id)?.interval == .seconds(6))
            }
        }
    }
}
