public import Core

/// The poll schedule as a pure state machine (`docs/DESIGN.md` §6.2): which machines are
/// due, and where each goes after a poll. No I/O and no clock of its own:
/// every method takes `now`, so tests drive it exactly.
public struct PollSchedule: Sendable {
    public let settings: PollSettings
    public private(set) var entries: [String: ScheduleEntry] = [:]
    private var random: SplitMix64
    /// The earliest due time, kept so that an idle round costs O(1)
    /// instead of a scan of every machine; recomputed only when the entry
    /// that held it moves later or goes.
    private var earliest: Timestamp?
    private var earliestIsStale = true

    /// What the poll found for one machine.
    public struct Observation: Sendable {
        /// nil: not found.
        public var state: ProviderV1.InstanceState?
        public var hasAddresses: Bool
        /// Agent started, or agentless.
        public var agentStarted: Bool

        public init(state: ProviderV1.InstanceState?, hasAddresses: Bool, agentStarted: Bool) {
            self.state = state
            self.hasAddresses = hasAddresses
            self.agentStarted = agentStarted
        }
    }

    public init(settings: PollSettings, seed: UInt64 = 0x1234_5678_9ABC_DEF0, resuming saved: [ScheduleEntry] = []) {
        self.settings = settings
        self.random = SplitMix64(seed: seed)
        for entry in saved { entries[entry.machineID] = entry }
    }

    /// Every change to an entry goes through here, to keep ``earliest``.
    private mutating func store(_ entry: ScheduleEntry) {
        let old = entries.updateValue(entry, forKey: entry.machineID)
        noteChange(from: old?.due, to: entry.due)
    }

    private mutating func noteChange(from old: Timestamp?, to new: Timestamp?) {
        guard !earliestIsStale else { return }
        if let new, earliest.map({ new < $0 }) ?? true {
            earliest = new
        } else if let old, old == earliest, new != old {
            earliestIsStale = true
        }
    }

    public func entry(_ machineID: String) -> ScheduleEntry? { entries[machineID] }

    /// How many tracked machines are in each group.
    public var groupCounts: (short: Int, long: Int) {
        var long = 0
        for entry in entries.values where entry.group == .long { long += 1 }
        return (entries.count - long, long)
    }

    /// A machine the schedule has not seen: short group, first interval,
    /// due one interval from now.
    @discardableResult
    public mutating func track(_ machineID: String, now: Timestamp) -> ScheduleEntry {
        if let existing = entries[machineID] { return existing }
        return resetToShort(machineID, now: now)
    }

    /// A change from outside the poller to a tracked machine: back to the
    /// short group with its interval reset.
    @discardableResult
    public mutating func resetToShort(_ machineID: String, now: Timestamp) -> ScheduleEntry {
        let entry = shortEntry(machineID, now: now)
        store(entry)
        return entry
    }

    private func shortEntry(_ machineID: String, now: Timestamp) -> ScheduleEntry {
        ScheduleEntry(machineID: machineID, group: .short, interval: settings.shortPoll, due: now + settings.shortPoll)
    }

    public mutating func untrack(_ machineID: String) {
        if let old = entries.removeValue(forKey: machineID) { noteChange(from: old.due, to: nil) }
    }

    /// Machines due at `now`, earliest first. O(1) when none is.
    public mutating func due(at now: Timestamp) -> [String] {
        guard let next = nextDue, next <= now else { return [] }
        return entries.values.filter { $0.due <= now }.sorted { ($0.due, $0.machineID) < ($1.due, $1.machineID) }.map(\.machineID)
    }

    /// The earliest due time, or nil when nothing is tracked.
    public var nextDue: Timestamp? {
        mutating get {
            if earliestIsStale {
                earliest = entries.values.lazy.map(\.due).min()
                earliestIsStale = false
            }
            return earliest
        }
    }

    /// Makes a machine due at `time` without touching its group or interval
    /// (an updated credential's paused machines are polled at once).
    public mutating func makeDue(_ machineID: String, at time: Timestamp) {
        guard var entry = entries[machineID] else { return }
        entry.due = time
        store(entry)
    }

    /// `interval = min(interval × backoff, cap)`, due one interval from now,
    /// in whatever group the machine is. Stored at once (``nextBump(_:now:)``
    /// and ``commit(_:)`` split it for a caller that must write first).
    @discardableResult
    public mutating func bump(_ machineID: String, now: Timestamp) -> ScheduleEntry? {
        guard let entry = nextBump(machineID, now: now) else { return nil }
        store(entry)
        return entry
    }

    /// Where a bump would put the machine; nothing is stored.
    public mutating func nextBump(_ machineID: String, now: Timestamp) -> ScheduleEntry? {
        guard let entry = entries[machineID] else { return nil }
        return bumped(entry, cap: settings.shortPollCap, now: now)
    }

    private mutating func bumped(_ entry: ScheduleEntry, cap: Duration, now: Timestamp) -> ScheduleEntry {
        var entry = entry
        if entry.group == .short {
            entry.interval = min(entry.interval * settings.backoffFactor, cap)
            entry.due = now + entry.interval
        } else {
            entry.due = now + jitteredLongPoll()
        }
        return entry
    }

    /// Applies the after-poll rules and stores the result (see
    /// ``nextEntry(_:after:now:)``).
    @discardableResult
    public mutating func record(_ machineID: String, _ observation: Observation, now: Timestamp) -> ScheduleEntry? {
        guard let entry = nextEntry(machineID, after: observation, now: now) else { return nil }
        store(entry)
        return entry
    }

    /// Where the after-poll rules put a machine, first match wins; nothing
    /// is stored until ``commit(_:)``, so that a caller can write the
    /// entries first and remember them only once they are written.
    ///
    /// - allocating or provisioning → bump;
    /// - not found → long group: back to short, reset (confirmed quickly);
    ///   short group: the backoff goes on doubling past the short cap up to
    ///   the long poll (3, 6 … 60, 120 … 900 s), so a vanished instance
    ///   costs almost nothing;
    /// - long group and unknown or no addresses → short, reset;
    /// - addresses and agent started → long;
    /// - otherwise short → bump (a machine found again after a long
    ///   not-found backoff comes back to the short cap); long stays long.
    public mutating func nextEntry(_ machineID: String, after observation: Observation, now: Timestamp) -> ScheduleEntry? {
        guard let entry = entries[machineID] else { return nil }
        if observation.state == .allocating || observation.state == .provisioning {
            return bumped(entry, cap: settings.shortPollCap, now: now)
        }
        if observation.state == nil {
            if entry.group == .long { return shortEntry(machineID, now: now) }
            let cap = entry.interval < settings.shortPollCap ? settings.shortPollCap : max(settings.longPoll, settings.shortPollCap)
            return bumped(entry, cap: cap, now: now)
        }
        if entry.group == .long, observation.state == .unknown || !observation.hasAddresses {
            return shortEntry(machineID, now: now)
        }
        if observation.hasAddresses, observation.agentStarted {
            return ScheduleEntry(machineID: machineID, group: .long, interval: settings.longPoll, due: now + jitteredLongPoll())
        }
        return bumped(entry, cap: settings.shortPollCap, now: now)
    }

    /// Stores entries made by ``nextEntry(_:after:now:)`` or
    /// ``nextBump(_:now:)``; entries of machines no longer tracked are
    /// dropped.
    public mutating func commit(_ planned: some Sequence<ScheduleEntry>) {
        for entry in planned where entries[entry.machineID] != nil { store(entry) }
    }

    /// The long interval moved by up to ± jitter.
    private mutating func jitteredLongPoll() -> Duration {
        let spread = settings.longPollJitter
        guard spread > 0 else { return settings.longPoll }
        let unit = Double(random.next() >> 11) / Double(1 << 53)  // [0, 1)
        return settings.longPoll * (1 + spread * (2 * unit - 1))
    }
}

/// A small seeded generator, so that jitter (and a test's fault timing) is
/// reproducible.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
