@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Testing
import TestSupport

/// The watcher on a manual clock: time moves only when a test advances it,
/// and every wait is on an event with a timeout.
@Suite("Machine watcher")
struct MachineWatcherTests {
    /// Consumes a watcher's batches in a task, handing each to the test.
    final class Consumer: Sendable {
        let batches = TestEvent<[MachineEvent]>()
        let ended = TestEvent<String>()
        let task: Task<Void, Never>

        init(_ sequence: MachineWatcher.Batches) {
            let batches = self.batches
            let ended = self.ended
            task = Task {
                do {
                    for try await batch in sequence { batches.signal(batch) }
                    ended.signal("finished")
                } catch {
                    ended.signal("threw \(error)")
                }
            }
        }

        func next(_ what: String = "a batch") async throws -> [MachineEvent] {
            try await batches.wait(.seconds(10), what)
        }
    }

    static func machine(_ id: String) -> Machine {
        Machine(id: id, provider: "fake", credential: "main", instanceID: "i-\(id)")
    }

    static func memoryStore(_ clock: ManualPollClock) throws -> SQLiteMachineStore {
        try SQLiteMachineStore.inMemory(clock: clock, logger: LogCapture().logger())
    }

    @Test func startsAfterTheGivenRevisionAndKeepsRevisionOrder() async throws {
        let clock = ManualPollClock()
        let store = try Self.memoryStore(clock)
        for id in ["m1", "m2", "m3", "m4", "m5", "m6"] { try await store.addMachine(Self.machine(id)) }
        let watcher = MachineWatcher(store: store, clock: clock, batchLimit: 2)
        let consumer = Consumer(watcher.batches(after: 1))
        defer { consumer.task.cancel() }
        // What is already there comes at once, in batches of at most two.
        #expect(try await consumer.next().map(\.revision) == [2, 3])
        #expect(try await consumer.next().map(\.revision) == [4, 5])
        #expect(try await consumer.next().map(\.machineID) == ["m6"])
    }

    @Test func aNudgeDeliversWithoutTheClockMoving() async throws {
        let clock = ManualPollClock()
        let store = try Self.memoryStore(clock)
        let watcher = MachineWatcher(store: store, clock: clock)
        store.setChangeHandler { [weak watcher] in watcher?.nudge() }
        let consumer = Consumer(watcher.batches(after: try await store.latestRevision()))
        defer { consumer.task.cancel() }

        await clock.waitForSleepers(1)
        let start = clock.now
        try await store.addMachine(Self.machine("m1"))
        let first = try await consumer.next("the nudged batch")
        #expect(first.map(\.kind) == [.machineAdded])
        #expect(first.map(\.machineID) == ["m1"])

        await clock.waitForSleepers(1)
        try await store.removeMachine(id: "m1")
        #expect(try await consumer.next("the second nudged batch").map(\.kind) == [.machineRemoved])
        #expect(clock.now == start)
    }

    @Test func theIntervalFindsChangesFromAnotherStoreOnTheSameFile() async throws {
        let fixture = try StoreFixture()
        defer { fixture.remove() }
        let clock = fixture.clock
        let ours = try fixture.open()
        // Another controller process, as far as SQLite is concerned: its
        // own connections to the file, and no way to nudge our watcher.
        let theirs = try fixture.open()
        try await ours.addMachine(Self.machine("m-ours"))

        let watcher = MachineWatcher(store: ours, clock: clock)
        ours.setChangeHandler { [weak watcher] in watcher?.nudge() }
        let consumer = Consumer(watcher.batches(after: try await ours.latestRevision()))
        defer { consumer.task.cancel() }

        await clock.waitForSleepers(1)
        try await theirs.addMachine(Self.machine("m-theirs"))
        try await theirs.applyPoll([PollResult(machineID: "m-ours", pollError: "x")], schedule: [])
        var updated = Self.machine("m-ours")
        updated.life = .dying
        try await theirs.updateMachine(updated)
        clock.advance(by: MachineWatcher.defaultInterval)

        let batch = try await consumer.next("the other store's changes")
        #expect(batch.map(\.kind) == [.machineAdded, .machinePolled, .machineChanged])
        #expect(batch.map(\.machineID) == ["m-theirs", "m-ours", "m-ours"])
        #expect(try await ours.machine(id: "m-ours")?.life == .dying)
    }

    @Test func cancellationEndsTheSequence() async throws {
        let clock = ManualPollClock()
        let store = try Self.memoryStore(clock)
        try await store.addMachine(Self.machine("m1"))
        let watcher = MachineWatcher(store: store, clock: clock)
        let consumer = Consumer(watcher.batches(after: 0))
        #expect(try await consumer.next().map(\.machineID) == ["m1"])
        await clock.waitForSleepers(1)
        consumer.task.cancel()
        #expect(try await consumer.ended.wait(.seconds(10), "the sequence to end") == "finished")
        #expect(clock.sleepers == 0)
    }

    @Test func aCancelledTaskGetsNothing() async throws {
        let clock = ManualPollClock()
        let store = try Self.memoryStore(clock)
        try await store.addMachine(Self.machine("m1"))
        let watcher = MachineWatcher(store: store, clock: clock)
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            var iterator = watcher.batches(after: 0).makeAsyncIterator()
            return try await iterator.next()
        }
        #expect(try await task.value == nil)
    }
}
