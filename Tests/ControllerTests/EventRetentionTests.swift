import Core
import ControlAPI
import Foundation
import Logging
import SwiftProtobuf
import Testing
import TestSupport

@_spi(Testing) @testable import Controller

/// The events log's retention (`events:` in the config): the service prunes
/// at its start and every interval of the injected clock, says how many it
/// removed, rides over a store error, and stops when cancelled; pruning
/// keeps the latest revision, so `Events` long polls go on from it.
@Suite struct EventRetentionTests {
    let clock = ManualPollClock()
    let logs = LogCapture()

    static func machine(_ id: String) -> Machine {
        Machine(id: id, provider: "cloud", credential: "main", instanceID: "i-\(id)")
    }

    func memoryStore() throws -> SQLiteMachineStore {
        try SQLiteMachineStore.inMemory(clock: clock, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
    }

    /// Runs the service until the test ends it.
    func start(_ store: any MachineStore, _ retention: EventRetention) -> Task<Void, Never> {
        let service = EventRetentionService(store: store, retention: retention, clock: clock, logger: logs.logger())
        return Task { await service.run() }
    }

    func pruned() -> [String] { logs.all.filter { $0.message == "events pruned" }.compactMap { $0.metadata["removed"] } }

    @Test func prunesAtItsStartAndEveryIntervalOnTheClock() async throws {
        let store = try memoryStore()
        for id in ["m1", "m2", "m3"] { try await store.addMachine(Self.machine(id)) }
        var retention = EventRetention(keepFor: .seconds(3600))
        retention.pruneInterval = .seconds(600)
        let running = start(store, retention)
        defer { running.cancel() }

        // The first round, at the start: nothing is an hour old yet.
        await clock.waitForSleepers()
        #expect(clock.nextDeadline == clock.now + .seconds(600))
        clock.advance(by: .seconds(1800))
        await clock.waitForSleepers()
        try await store.addMachine(Self.machine("m4"))
        // An hour on, the first three are exactly an hour old: kept.
        clock.advance(by: .seconds(1800))
        await clock.waitForSleepers()
        #expect(try await store.events(after: 0, limit: 10).map(\.revision) == [1, 2, 3, 4])
        #expect(pruned().isEmpty, "nothing removed, nothing said")
        // Past the hour: they go, the later one stays.
        clock.advance(by: .seconds(600))
        await clock.waitForSleepers()
        #expect(try await store.events(after: 0, limit: 10).map(\.revision) == [4])
        #expect(pruned() == ["3"])
        #expect(logs.all.first { $0.message == "events pruned" }?.level == .info)
        #expect(try await store.latestRevision() == 4)
        running.cancel()
        try await withTimeout(.seconds(10), "the service to stop when cancelled") { await running.value }
    }

    @Test func aStoreErrorIsAWarningAndTheNextRoundTriesAgain() async throws {
        let store = try FakeLeaseStore(clock: clock, databaseNow: clock.now)
        for index in 1...5 { try await store.addMachine(Self.machine("m\(index)")) }
        store.failPrunes(times: 1)
        var retention = EventRetention(keepRevisions: 2)
        retention.pruneInterval = .seconds(60)
        let running = start(store, retention)
        defer { running.cancel() }

        await clock.waitForSleepers()
        let warning = try #require(logs.all.first { $0.level == .warning })
        #expect(warning.message == "events not pruned, trying again in 60.0 seconds: pruning the events log: database is locked (injected)")
        #expect(try await store.events(after: 0, limit: 10).count == 5, "nothing removed")
        clock.advance(by: .seconds(60))
        await clock.waitForSleepers()
        #expect(try await store.events(after: 0, limit: 10).map(\.revision) == [4, 5])
        #expect(pruned() == ["3"])
    }

    /// Without bounds it prunes nothing and only waits to be stopped.
    @Test func withoutBoundsItOnlyWaitsForTheStop() async throws {
        let store = try memoryStore()
        try await store.addMachine(Self.machine("m1"))
        let running = start(store, EventRetention())
        running.cancel()
        try await withTimeout(.seconds(10), "the service to stop when cancelled") { await running.value }
        #expect(clock.sleepers == 0)
        #expect(try await store.events(after: 0, limit: 10).count == 1)
    }

    /// Pruned to nothing, the log still says its latest revision, and an
    /// `Events` long poll after it waits for, and gets, the next event.
    @Test func pruningKeepsTheLatestRevisionAndEventsLongPollsGoOnFromIt() async throws {
        let store = try memoryStore()
        for index in 1...10 { try await store.addMachine(Self.machine("m\(index)")) }
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let feed = EventsFeed(store: store, clock: clock)
        store.setChangeHandler { feed.nudge() }
        let service = ControlService(
            identity: .init(pid: 1, version: "test", startedAt: clock.now, storePath: ":memory:", runtimeDirectory: "/nonexistent"),
            store: store,
            fleet: ProviderFleet(
                providers: [], runtimeDirectory: "/nonexistent", clock: clock, settings: SupervisionSettings(), credentials: nil, logger: logger),
            clock: clock, environment: [:], eventsFeed: feed, logger: logger)

        #expect(try await store.pruneEvents(before: nil, keepingLast: 3) == 7)
        var answer = try await callControl(service, ControlV1.events, .with { $0.afterRevision = 0 })
        #expect(answer.events.map(\.revision) == [8, 9, 10])
        #expect(answer.latestRevision == 10)

        #expect(try await store.pruneEvents(before: nil, keepingLast: 0) == 3)
        #expect(try await store.latestRevision() == 10, "revisions are never reused")
        answer = try await callControl(service, ControlV1.events, .with { $0.afterRevision = 10 })
        #expect(answer.events.isEmpty)
        #expect(answer.latestRevision == 10)

        let waiting = Task {
            try await callControl(service, ControlV1.events, .with {
                $0.afterRevision = 10
                $0.waitNano = Duration.seconds(30).totalNanoseconds
            })
        }
        // The feed's watcher has read the log (revision 10) and parked: the call waits.
        await clock.waitForSleepers()
        #expect(feed.waiting == 1)
        try await store.addMachine(Self.machine("m11"))
        answer = try await withTimeout(.seconds(10), "the long poll to answer") { try await waiting.value }
        #expect(answer.events.map(\.revision) == [11])
        #expect(answer.events.first?.machineID == "m11")
        #expect(answer.latestRevision == 11)
    }
}
