@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Testing

/// The schedule rules of docs/DESIGN.md §6.2 on the pure state machine, with exact times.
@Suite("Poll schedule rules")
struct PollScheduleTests {
    static let t0 = Timestamp(nanosecondsSinceEpoch: 1_000_000_000_000)
    static let running = PollSchedule.Observation(state: .running, hasAddresses: true, agentStarted: true)

    @Test func newMachineJoinsTheShortGroupDueOneIntervalOut() {
        var schedule = PollSchedule(settings: PollSettings())
        let entry = schedule.track("m1", now: Self.t0)
        #expect(entry == ScheduleEntry(machineID: "m1", group: .short, interval: .seconds(3), due: Self.t0 + .seconds(3)))
        // Tracking again keeps the existing entry.
        #expect(schedule.track("m1", now: Self.t0 + .seconds(1)) == entry)
    }

    @Test func bumpsFollowThreeSixTwelveUpToTheCap() {
        var schedule = PollSchedule(settings: PollSettings())
        schedule.track("m1", now: Self.t0)
        var intervals: [Duration] = [schedule.entry("m1")!.interval]
        for _ in 0..<6 { intervals.append(schedule.bump("m1", now: Self.t0)!.interval) }
        #expect(intervals == [3, 6, 12, 24, 48, 60, 60].map { Duration.seconds($0) })
        #expect(schedule.entry("m1")!.due == Self.t0 + .seconds(60))
    }

    @Test func notYetDueIsNotPolled() {
        var schedule = PollSchedule(settings: PollSettings())
        schedule.track("m1", now: Self.t0)
        schedule.track("m2", now: Self.t0 + .seconds(1))
        #expect(schedule.due(at: Self.t0 + .seconds(2)).isEmpty)
        #expect(schedule.due(at: Self.t0 + .seconds(3)) == ["m1"])
        #expect(schedule.due(at: Self.t0 + .seconds(4)) == ["m1", "m2"])
        #expect(schedule.nextDue == Self.t0 + .seconds(3))
    }

    @Test func allocatingOrProvisioningIsBumpedInPlace() {
        for state in [ProviderV1.InstanceState.allocating, .provisioning] {
            var schedule = PollSchedule(settings: PollSettings())
            schedule.track("m1", now: Self.t0)
            let entry = schedule.record("m1", .init(state: state, hasAddresses: true, agentStarted: true), now: Self.t0)
            #expect(entry?.group == .short && entry?.interval == .seconds(6))
        }
    }

    @Test func startedWithAddressesMovesToTheLongGroup() {
        var schedule = PollSchedule(settings: PollSettings(longPollJitter: 0))
        schedule.track("m1", now: Self.t0)
        let entry = schedule.record("m1", Self.running, now: Self.t0)
        #expect(entry == ScheduleEntry(machineID: "m1", group: .long, interval: .seconds(900), due: Self.t0 + .seconds(900)))
    }

    @Test func agentlessCountsAsStartedButAPendingAgentStaysShort() {
        var schedule = PollSchedule(settings: PollSettings())
        schedule.track("m1", now: Self.t0)
        let pending = schedule.record("m1", .init(state: .running, hasAddresses: true, agentStarted: false), now: Self.t0)
        #expect(pending?.group == .short && pending?.interval == .seconds(6))
    }

    @Test(arguments: [
        PollSchedule.Observation(state: .unknown, hasAddresses: true, agentStarted: true),
        PollSchedule.Observation(state: nil, hasAddresses: false, agentStarted: true),
        PollSchedule.Observation(state: .running, hasAddresses: false, agentStarted: true),
    ])
    func longGroupMachineThatLostItsFootingGoesBackToShortReset(observation: PollSchedule.Observation) {
        var schedule = PollSchedule(settings: PollSettings())
        schedule.track("m1", now: Self.t0)
        schedule.record("m1", Self.running, now: Self.t0)
        let later = Self.t0 + .seconds(900)
        let entry = schedule.record("m1", observation, now: later)
        #expect(entry == ScheduleEntry(machineID: "m1", group: .short, interval: .seconds(3), due: later + .seconds(3)))
    }

    @Test func notFoundInTheShortGroupBacksOff() {
        var schedule = PollSchedule(settings: PollSettings())
        schedule.track("m1", now: Self.t0)
        let entry = schedule.record("m1", .init(state: nil, hasAddresses: false, agentStarted: true), now: Self.t0)
        #expect(entry?.group == .short && entry?.interval == .seconds(6))
    }

    @Test func notFoundBacksOffPastTheShortCapUpToTheLongPollThenFoundComesBackToTheCap() {
        var schedule = PollSchedule(settings: PollSettings())
        schedule.track("m1", now: Self.t0)
        let gone = PollSchedule.Observation(state: nil, hasAddresses: false, agentStarted: true)
        var intervals: [Duration] = []
        for _ in 0..<10 { intervals.append(schedule.record("m1", gone, now: Self.t0)!.interval) }
        #expect(intervals == [6, 12, 24, 48, 60, 120, 240, 480, 900, 900].map { Duration.seconds($0) })
        #expect(schedule.entry("m1")?.group == .short && schedule.entry("m1")?.due == Self.t0 + .seconds(900))
        let found = schedule.record("m1", .init(state: .running, hasAddresses: false, agentStarted: true), now: Self.t0)
        #expect(found?.group == .short && found?.interval == .seconds(60))
    }

    @Test func aPlannedEntryIsStoredOnlyWhenCommitted() {
        var schedule = PollSchedule(settings: PollSettings(longPollJitter: 0))
        let tracked = schedule.track("m1", now: Self.t0)
        let planned = schedule.nextEntry("m1", after: Self.running, now: Self.t0)
        let bump = schedule.nextBump("m1", now: Self.t0)
        #expect(planned?.group == .long && bump?.interval == .seconds(6))
        #expect(schedule.entry("m1") == tracked && schedule.nextDue == tracked.due, "nothing stored yet")
        schedule.commit([planned!, ScheduleEntry(machineID: "gone", group: .short, interval: .seconds(3), due: Self.t0)])
        #expect(schedule.entry("m1") == planned)
        #expect(schedule.entry("gone") == nil, "entries of machines not tracked are dropped")
        #expect(schedule.nextDue == planned?.due)
    }

    @Test func aChangeEventResetsTheInterval() {
        var schedule = PollSchedule(settings: PollSettings())
        schedule.track("m1", now: Self.t0)
        for _ in 0..<4 { schedule.bump("m1", now: Self.t0) }
        #expect(schedule.entry("m1")?.interval == .seconds(48))
        let entry = schedule.resetToShort("m1", now: Self.t0 + .seconds(10))
        #expect(entry.interval == .seconds(3) && entry.due == Self.t0 + .seconds(13))
    }

    @Test func untrackedMachinesAreGone() {
        var schedule = PollSchedule(settings: PollSettings())
        schedule.track("m1", now: Self.t0)
        schedule.untrack("m1")
        #expect(schedule.entry("m1") == nil && schedule.due(at: Self.t0 + .seconds(100)).isEmpty)
        #expect(schedule.bump("m1", now: Self.t0) == nil)
    }

    @Test func jitterSpreadsTheLongGroupWithinTenPercent() {
        var schedule = PollSchedule(settings: PollSettings())
        for index in 0..<1000 {
            schedule.track("m\(index)", now: Self.t0)
            schedule.record("m\(index)", Self.running, now: Self.t0)
        }
        let offsets = schedule.entries.values.map { $0.due - Self.t0 }
        #expect(offsets.allSatisfy { $0 >= .seconds(810) && $0 <= .seconds(990) })
        #expect(Set(offsets).count > 990, "due times are spread, not one burst")
        let early = offsets.filter { $0 < .seconds(900) }.count
        #expect(early > 400 && early < 600, "both sides of the interval are used")
    }

    @Test func aSavedScheduleIsResumed() {
        let saved = [ScheduleEntry(machineID: "m1", group: .long, interval: .seconds(900), due: Self.t0 + .seconds(500))]
        var schedule = PollSchedule(settings: PollSettings(), resuming: saved)
        #expect(schedule.entry("m1") == saved[0])
        #expect(schedule.track("m1", now: Self.t0) == saved[0])  // not sent back to 3 s
    }

    @Test func settingsAreChecked() {
        #expect(PollSettings().problem() == nil)
        #expect(PollSettings(shortPoll: .zero).problem() == "short poll interval must be positive")
        #expect(PollSettings(shortPollCap: .seconds(1)).problem() == "short poll cap must not be below the short poll interval")
        #expect(PollSettings(maxIDsPerCall: 0).problem() == "max ids per call must be at least 1")
        #expect(PollSettings(backoffFactor: 0.5).problem() == "backoff factor must be at least 1")
    }

    /// The kept earliest due time agrees with a scan of every entry after
    /// any sequence of changes (it is what makes an idle round O(1)).
    @Test func theEarliestDueTimeIsKeptThroughEveryChange() {
        var schedule = PollSchedule(settings: PollSettings(longPollJitter: 0.1), seed: 7)
        var random = SystemRandomNumberGenerator()
        var now = Self.t0
        for step in 0..<2000 {
            let id = "m\(Int.random(in: 0..<50, using: &random))"
            switch Int.random(in: 0..<6, using: &random) {
            case 0: schedule.track(id, now: now)
            case 1: schedule.resetToShort(id, now: now)
            case 2: schedule.untrack(id)
            case 3: schedule.bump(id, now: now)
            case 4: schedule.makeDue(id, at: now)
            default:
                schedule.record(id, .init(state: .running, hasAddresses: Bool.random(using: &random), agentStarted: true), now: now)
            }
            now = now + .milliseconds(Int64.random(in: 0...500, using: &random))
            let scanned = schedule.entries.values.map(\.due).min()
            #expect(schedule.nextDue == scanned, "after step \(step)")
            #expect(schedule.due(at: now) == schedule.entries.values.filter { $0.due <= now }.sorted { ($0.due, $0.machineID) < ($1.due, $1.machineID) }.map(\.machineID))
        }
    }
}
