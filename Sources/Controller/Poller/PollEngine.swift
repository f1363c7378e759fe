internal import Core
internal import Logging

/// The poll engine behind ``Poller``: the loop, the machines it tracks,
/// and the events log it follows. Polling the due machines is in
/// `PollEngine+Batches.swift`.
///
/// Two rules hold throughout:
/// - **Write first, then remember.** Memory (statuses, interface hashes,
///   poll errors, schedule) changes only after the store has committed the
///   write, so that a failed write is retried with the same answer instead
///   of being mistaken for "nothing changed".
/// - **Never spin.** Each (provider, credential) pair has a schedule of its
///   own; a paused pair (throttled, its shim down or starting, its last
///   write failed) is not scanned and does not wake the loop. The loop
///   sleeps until the next due machine of a pair that may be polled, the
///   end of a pause, a shim coming back, a change this process made to the
///   store, or the next read of the events log, whichever comes first.
actor PollEngine {
    let clock: any PollClock
    let store: any MachineStore
    let providers: any ProviderRouter
    let credentials: any CredentialAPI
    let logger: Logger
    let settings: PollSettings
    let watchInterval: Duration
    let metrics: ControllerMetrics?
    let wakeup = PollWakeup()

    /// One schedule per pair (see the type's comment).
    var schedules: [CredentialKey: PollSchedule] = [:]
    var machines: [String: TrackedMachine] = [:]
    private var revision: Int64 = 0
    private var loaded = false
    private let jitterSeed: UInt64
    /// Pairs that are not polled until a time, and why.
    var pauses: [CredentialKey: Pause] = [:]
    /// Pairs with a batch in flight: another round leaves them alone, so
    /// there is never more than one call in flight per pair.
    var inFlight: Set<CredentialKey> = []
    /// Providers whose shim was found down (logged once until it answers).
    var shimDown: Set<String> = []
    /// Credentials the gate found invalid, until they change or are found
    /// valid again.
    var invalid: [CredentialKey: String] = [:]
    /// When each invalid credential is next asked about again (not the
    /// expired ones: only setting them again helps).
    var rechecks: [CredentialKey: Timestamp] = [:]

    /// How often an invalid credential whose machines wait is validated
    /// again through its shim: a credential that failed for a while (an
    /// outage of the cloud's auth, a key rotated back) clears itself.
    static let credentialRecheck: Duration = .seconds(60)

    /// How soon a pair whose shim is down, or whose write failed, is first
    /// tried again (the short poll, if that is shorter); each further try
    /// waits twice as long, up to the short-poll cap, until a batch of the
    /// pair goes through. A shim that serves again wakes the loop at once,
    /// so the waiting machines never wait for the retry.
    static let retryPause: Duration = .seconds(1)
    /// Failed tries in a row per pair (shim down, store failed).
    var retries: [CredentialKey: Int] = [:]

    struct Pause {
        enum Reason {
            /// ResourceExhausted: the retry-after hint, or the short-poll cap.
            case throttled
            /// The provider's shim is down or still starting.
            case shimDown
            /// The batch's results could not be written.
            case storeFailed
        }

        var until: Timestamp
        var reason: Reason
    }

    init(config: PollerConfig) {
        clock = config.clock!
        store = config.store!
        providers = config.providers!
        credentials = config.credentials!
        logger = config.logger!
        settings = config.settings
        watchInterval = config.watchInterval
        metrics = config.metrics
        jitterSeed = config.jitterSeed
        let wakeup = self.wakeup
        providers.whenShimServes { provider in wakeup.signal(provider: provider) }
        providers.whenProviderSwapped { provider in wakeup.swapped(provider: provider) }
    }

    func run() async throws {
        while !Task.isCancelled {
            var failed = false
            do {
                try await round()
            } catch is CancellationError {
                break
            } catch {
                // Errors never kill the poller: log and try again next round.
                failed = true
                logger.error("poll round failed", metadata: ["error": "\(error)"])
            }
            let now = clock.now
            var wake = nextWake(now: now)
            // A round that failed (the store, most likely) is not retried
            // before the next events read.
            if failed { wake = max(wake, now + watchInterval) }
            do {
                try await wakeup.wait(until: wake, on: clock)
            } catch {
                break
            }
        }
    }

    /// One round; returns the provider calls made.
    @discardableResult
    func round() async throws -> Int {
        if !loaded { try await load() }
        let signalled = wakeup.take()
        resumeServing(signalled.serving.union(signalled.swapped))
        pollSwappedNow(signalled.swapped)
        try await readEvents()
        let checks = try await recheckInvalidCredentials()
        return try await checks + pollDue()
    }

    // MARK: - Sleeping

    /// The earliest of: the next events read, the end of a pause, and the
    /// next due machine of a pair that may be polled. Earlier than `now`
    /// only when machines came due while the round ran.
    func nextWake(now: Timestamp) -> Timestamp {
        var wake = now + watchInterval
        pauses = pauses.filter { $0.value.until > now }
        for pause in pauses.values { wake = min(wake, pause.until) }
        for key in Array(schedules.keys) where pauses[key] == nil && !inFlight.contains(key) {
            if let next = schedules[key]?.nextDue { wake = min(wake, next) }
            if let recheck = rechecks[key] { wake = min(wake, recheck) }
        }
        return wake
    }

    func isPaused(_ key: CredentialKey, at now: Timestamp) -> Bool {
        pauses[key].map { $0.until > now } ?? false
    }

    func pause(_ key: CredentialKey, until: Timestamp, _ reason: Pause.Reason) {
        pauses[key] = Pause(until: until, reason: reason)
    }

    /// Pauses a pair that is to be tried again (its shim is down, its write
    /// failed): 1 s, 2 s, 4 s … the short-poll cap; returns the pause.
    @discardableResult
    func pauseToRetry(_ key: CredentialKey, _ reason: Pause.Reason, now: Timestamp) -> Duration {
        let first = min(settings.shortPoll, Self.retryPause)
        let tries = retries[key, default: 0]
        retries[key] = tries + 1
        let wait = min(first * Double(1 << min(tries, 20)), max(settings.shortPollCap, first))
        pause(key, until: now + wait, reason)
        return wait
    }

    /// Shims that serve again: their pairs are polled now, not at the
    /// retry.
    private func resumeServing(_ providers: Set<String>) {
        guard !providers.isEmpty else { return }
        for (key, pause) in pauses where pause.reason == .shimDown && providers.contains(key.provider) {
            pauses.removeValue(forKey: key)
            retries.removeValue(forKey: key)
        }
    }

    /// Providers whose shim was swapped for another backend: every machine
    /// of theirs is due now, whatever its group (a long-group machine would
    /// otherwise show the old backend's answer for up to the long poll).
    /// Groups and intervals stay; the poll's answer moves them as usual. A
    /// throttle came from the old backend, so it no longer pauses them.
    private func pollSwappedNow(_ providers: Set<String>) {
        guard !providers.isEmpty else { return }
        let now = clock.now
        var counts: [String: Int] = [:]
        for key in Array(schedules.keys) where providers.contains(key.provider) {
            if pauses[key]?.reason == .throttled { pauses.removeValue(forKey: key) }
            withSchedule(key) { schedule in
                for id in Array(schedule.entries.keys) { schedule.makeDue(id, at: now) }
                counts[key.provider, default: 0] += schedule.entries.count
            }
        }
        for provider in providers.sorted() {
            logger.info("provider swapped: its machines are polled now", metadata: [
                "provider": "\(provider)", "machines": "\(counts[provider] ?? 0)",
            ])
        }
    }

    // MARK: - Schedules

    /// The pair's schedule, created on first use with a seed of its own (so
    /// that jitter is reproducible for a given config seed).
    @discardableResult
    func withSchedule<T>(_ key: CredentialKey, _ body: (inout PollSchedule) -> T) -> T {
        if schedules[key] == nil { schedules[key] = PollSchedule(settings: settings, seed: seed(for: key)) }
        return body(&schedules[key]!)
    }

    private func seed(for key: CredentialKey) -> UInt64 {
        // FNV-1a: stable across runs, unlike Hasher.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.description.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return jitterSeed ^ hash
    }

    /// A machine's entry, in its pair's schedule.
    func entry(_ machineID: String) -> ScheduleEntry? {
        machines[machineID].flatMap { schedules[$0.key]?.entry(machineID) }
    }

    private func untrack(_ machineID: String, from key: CredentialKey) {
        schedules[key]?.untrack(machineID)
        if schedules[key]?.entries.isEmpty == true { schedules.removeValue(forKey: key) }
    }

    // MARK: - Loading and events

    private func load() async throws {
        let now = clock.now
        revision = try await store.latestRevision()
        var saved = try await store.schedule()
        let savedCount = saved.count
        let all = try await store.machines()
        for machine in all { machines[machine.id] = TrackedMachine(machine) }
        var resumed: [CredentialKey: [ScheduleEntry]] = [:]
        var removing: [String] = []
        for entry in saved {
            guard let machine = machines[entry.machineID] else {
                removing.append(entry.machineID)
                continue
            }
            resumed[machine.key, default: []].append(entry)
        }
        // At 100 000 machines each copy of the schedule is megabytes: keep one.
        saved = []
        for key in Array(resumed.keys) {
            guard let entries = resumed.removeValue(forKey: key) else { continue }
            schedules[key] = PollSchedule(settings: settings, seed: seed(for: key), resuming: entries)
        }
        for machine in all { try await place(machine, now: now, reset: false) }
        var entries: [ScheduleEntry] = []
        for schedule in schedules.values { entries.append(contentsOf: schedule.entries.values) }
        try await store.saveSchedule(entries, removing: removing)
        loaded = true
        logger.info("poller started", metadata: ["machines": "\(all.count)", "resumed": "\(savedCount - removing.count)"])
    }

    /// Puts a machine where it belongs: dead → forgotten; manual → not
    /// scheduled, marked running; otherwise scheduled in its pair (reset
    /// to the short group when `reset`). Its record must be in `machines`.
    private func place(_ machine: Machine, now: Timestamp, reset: Bool) async throws {
        let key = machine.credentialKey
        if machine.life == .dead {
            untrack(machine.id, from: key)
            machines.removeValue(forKey: machine.id)
            return
        }
        if machine.manual {
            untrack(machine.id, from: key)
            // Juju's rule: a manual machine not running is set running;
            // one already running is left as it is.
            if machine.instanceStatus.state != .running {
                let status = InstanceStatusRecord(state: .running, rawStatus: "running", message: Self.manualMessage, updatedAt: now)
                try await store.setInstanceStatus(machineID: machine.id, status)
                machines[machine.id]?.instanceStatus = status
                logger.info(
                    "instance status changed from \(machine.instanceStatus.summary) to \(status.summary)",
                    metadata: ["machine": "\(machine.id)"])
            }
            return
        }
        withSchedule(key) { schedule in
            if reset {
                schedule.resetToShort(machine.id, now: now)
            } else {
                schedule.track(machine.id, now: now)
            }
        }
    }

    static let manualMessage = "Manually provisioned machine"

    private func forget(_ machineID: String) {
        if let machine = machines.removeValue(forKey: machineID) { untrack(machineID, from: machine.key) }
    }

    /// Reads the events log after the last revision seen. Only changes from
    /// outside count (the store leaves the poller's own out); the revision
    /// moves on only once the schedule changes they caused are written, so
    /// a failed write reads them again.
    private func readEvents() async throws {
        while true {
            let read = try await store.externalEvents(after: revision, limit: 1000)
            let events = read.events
            let now = clock.now
            var touched: [String] = []
            var removed: [String] = []
            for event in events {
                switch event.kind {
                case .machineAdded, .machineChanged:
                    guard let machine = try await store.machine(id: event.machineID) else {
                        forget(event.machineID)
                        removed.append(event.machineID)
                        continue
                    }
                    let before = machines[machine.id]
                    if let before, before.key != machine.credentialKey {
                        untrack(machine.id, from: before.key)
                    }
                    machines[machine.id] = TrackedMachine(machine)
                    try await place(machine, now: now, reset: before?.isResetBy(machine) ?? false)
                    if entry(machine.id) != nil { touched.append(machine.id) } else { removed.append(machine.id) }
                case .machineRemoved:
                    forget(event.machineID)
                    removed.append(event.machineID)
                case .credentialSet:
                    if let key = CredentialKey(label: event.credential) {
                        credentialUsable(key, now: now)
                        logger.info("credential updated", metadata: ["credential": "\(key)"])
                    }
                case .credentialValidated:
                    // Found valid by someone else (`credentials validate`).
                    if let key = CredentialKey(label: event.credential) {
                        credentialUsable(key, now: now)
                        logger.info("credential valid again", metadata: ["credential": "\(key)"])
                    }
                case .credentialRemoved:
                    if let key = CredentialKey(label: event.credential) { credentialRemoved(key, now: now) }
                case .machinePolled, .instanceStatusChanged, .addressesChanged, .agentStatusChanged, .credentialInvalidated:
                    break
                }
            }
            let entries = touched.compactMap { entry($0) }
            if !entries.isEmpty || !removed.isEmpty {
                try await store.saveSchedule(entries, removing: removed)
            }
            revision = read.through
            if events.count < 1000 { return }
        }
    }

    /// An updated credential, or one found valid again: forget the gate's
    /// verdict, so the next batch validates it, and poll its paused machines
    /// at once.
    func credentialUsable(_ key: CredentialKey, now: Timestamp) {
        invalid.removeValue(forKey: key)
        rechecks.removeValue(forKey: key)
        for machine in machines.values where machine.key == key && machine.pollError?.hasPrefix("credential invalid") == true {
            withSchedule(key) { schedule in
                schedule.resetToShort(machine.id, now: now)
                schedule.makeDue(machine.id, at: now)
            }
        }
    }

    /// A removed credential: its machines stay and pause. They are made due
    /// now so that the gate records why at once (no cloud call is made).
    private func credentialRemoved(_ key: CredentialKey, now: Timestamp) {
        invalid.removeValue(forKey: key)
        rechecks.removeValue(forKey: key)
        for machine in machines.values where machine.key == key { schedules[key]?.makeDue(machine.id, at: now) }
        logger.notice("credential removed; its machines are not polled until it is set again", metadata: ["credential": "\(key)"])
    }
}
