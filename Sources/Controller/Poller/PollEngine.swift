internal import Core
internal import Logging

/// The poll engine behind ``Poller``. Its rooms:
/// - here: its state, the loop, sleeping, pauses and the pairs' schedules;
/// - `PollEngine+Events.swift`: loading, reading the events log and
///   applying the store's changes to what it tracks;
/// - `PollEngine+Batches.swift`: building each pair's batches, the calls,
///   and writing their results;
/// - `PollEngine+CredentialGate.swift`: the gate before every batch and the
///   once-a-minute re-check of invalid credentials;
/// - `FailurePolicy.swift`: what a failed batch means, decided without the
///   engine; `PollEngine+Failures.swift` applies the decision.
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
    /// The settings of every provider without its own.
    let settings: PollSettings
    /// Providers with settings of their own, by name.
    let providerSettings: [String: PollSettings]
    let watchInterval: Duration
    let metrics: ControllerMetrics?
    let wakeup = PollWakeup()
    /// Beats each turn and each batch: the watchdog and `/readyz` read it.
    let heartbeat = PollHeartbeat()
    /// The pairs this controller holds leases on (nil: all are its own).
    let ownership: PairOwnership?
    /// The pairs loaded under a lease (only with ``ownership``).
    var owned: Set<CredentialKey> = []

    /// One schedule per pair (see the type's comment).
    var schedules: [CredentialKey: PollSchedule] = [:]
    var machines: [String: TrackedMachine] = [:]
    /// The events log's revision read through.
    var revision: Int64 = 0
    var loaded = false
    private let jitterSeed: UInt64
    /// Pairs that are not polled until a time, and why.
    var pauses: [CredentialKey: PairPause] = [:]
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

    /// What each failed batch means, per provider with settings of its own
    /// and for the rest.
    let failurePolicies: [String: FailurePolicy]
    let defaultFailurePolicy: FailurePolicy
    /// Failed tries in a row per pair (shim down, store failed): how long
    /// the next retry waits (``FailurePolicy/retryWait(after:)``), until a
    /// batch of the pair goes through.
    var retries: [CredentialKey: Int] = [:]
    /// When the engine's gauges were last set (`PollEngine+Gauges.swift`).
    var gauges = GaugeState()

    init(config: PollerConfig) {
        clock = config.clock!
        store = config.store!
        providers = config.providers!
        credentials = config.credentials!
        logger = config.logger!
        settings = config.settings
        providerSettings = config.providerSettings
        defaultFailurePolicy = FailurePolicy(settings: config.settings)
        failurePolicies = config.providerSettings.mapValues { FailurePolicy(settings: $0) }
        watchInterval = config.watchInterval
        metrics = config.metrics
        jitterSeed = config.jitterSeed
        ownership = config.ownership
        let wakeup = self.wakeup
        // A lease taken or lost: the next round loads or drops the pair.
        ownership?.whenChanged { wakeup.storeChanged() }
        providers.whenShimServes { provider in wakeup.signal(provider: provider) }
        providers.whenProviderSwapped { provider in wakeup.swapped(provider: provider) }
    }

    func run() async throws {
        heartbeat.started(at: clock.now)
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
            heartbeat.turned(at: now, machines: machines.count)
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
        try await followLeases()
        resumeServing(signalled.serving.union(signalled.swapped))
        pollSwappedNow(signalled.swapped)
        try await readEvents()
        let checks = try await recheckInvalidCredentials()
        let calls = try await checks + pollDue()
        try await reportGauges()
        return calls
    }

    // MARK: - Sleeping

    /// The earliest of: the next events read, the end of a pause, and the
    /// next due machine of a pair that may be polled. Earlier than `now`
    /// only when machines came due while the round ran.
    func nextWake(now: Timestamp) -> Timestamp {
        var wake = now + watchInterval
        pauses = pauses.filter { $0.value.until > now }
        for pause in pauses.values { wake = min(wake, pause.until) }
        for key in Array(schedules.keys) where pauses[key] == nil && !inFlight.contains(key) && mayPoll(key) {
            if let next = schedules[key]?.nextDue { wake = min(wake, next) }
            if let recheck = rechecks[key] { wake = min(wake, recheck) }
        }
        return wake
    }

    /// Whether this controller may poll the pair now: always with one
    /// controller; with several, while it surely holds the pair's lease.
    func mayPoll(_ key: CredentialKey) -> Bool {
        guard let ownership else { return true }
        return ownership.fence(for: key) != nil
    }

    func isPaused(_ key: CredentialKey, at now: Timestamp) -> Bool {
        pauses[key].map { $0.until > now } ?? false
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
        if schedules[key] == nil { schedules[key] = PollSchedule(settings: settings(for: key), seed: seed(for: key)) }
        return body(&schedules[key]!)
    }

    /// The poll settings of `key`'s provider.
    func settings(for key: CredentialKey) -> PollSettings {
        providerSettings[key.provider] ?? settings
    }

    /// What a failed batch of `key`'s pair means (its provider's settings).
    func failurePolicy(for key: CredentialKey) -> FailurePolicy {
        failurePolicies[key.provider] ?? defaultFailurePolicy
    }

    func seed(for key: CredentialKey) -> UInt64 {
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

    func untrack(_ machineID: String, from key: CredentialKey) {
        schedules[key]?.untrack(machineID)
        if schedules[key]?.entries.isEmpty == true { schedules.removeValue(forKey: key) }
    }
}
