internal import Core
internal import Logging

/// Loading what the store holds, and following its events log: machines
/// added, changed or removed and credentials set, validated or removed
/// elsewhere change what the engine tracks and schedules.
extension PollEngine {
    func load() async throws {
        if ownership != nil {
            // Only the pairs held: ``followLeases()`` loads each as its
            // lease is taken.
            revision = try await store.latestRevision()
            loaded = true
            logger.info("poller started", metadata: ["machines": "0", "leases": "\(ownership?.held.count ?? 0)"])
            return
        }
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
            schedules[key] = PollSchedule(settings: settings(for: key), seed: seed(for: key), resuming: entries)
        }
        for machine in all { try await place(machine, now: now, reset: false) }
        var entries: [ScheduleEntry] = []
        for schedule in schedules.values { entries.append(contentsOf: schedule.entries.values) }
        try await store.saveSchedule(entries, removing: removing)
        loaded = true
        logger.info("poller started", metadata: ["machines": "\(all.count)", "resumed": "\(savedCount - removing.count)"])
    }

    /// With several controllers: loads the pairs whose lease was taken since
    /// the last round and drops those lost or handed back (their machines
    /// are another controller's now).
    func followLeases() async throws {
        guard let ownership else { return }
        let held = ownership.held
        for key in owned.subtracting(held).sorted(by: { $0.description < $1.description }) {
            drop(key)
        }
        for key in held.subtracting(owned).sorted(by: { $0.description < $1.description }) {
            // Handed back or lost while the ones before it loaded: never
            // load (or write the schedule of) a pair another holds.
            guard ownership.fence(for: key) != nil else { continue }
            try await loadPair(key)
        }
    }

    /// Loads one pair's machines and saved schedule, as ``load()`` does for
    /// the whole store.
    private func loadPair(_ key: CredentialKey) async throws {
        let now = clock.now
        let all = try await store.machines(of: key)
        let stored = try await store.schedule(of: key)
        for machine in all { machines[machine.id] = TrackedMachine(machine) }
        let resumed = stored.filter { machines[$0.machineID]?.key == key }
        if !resumed.isEmpty {
            schedules[key] = PollSchedule(settings: settings(for: key), seed: seed(for: key), resuming: resumed)
        }
        for machine in all { try await place(machine, now: now, reset: false) }
        // Only the entries placed anew (machines the last holder had not
        // scheduled): the rest are in the store as they are, and rewriting
        // them would cost a write per machine and could undo what a next
        // holder wrote if this lease ran out meanwhile.
        let saved = Set(resumed.map(\.machineID))
        let placed = schedules[key]?.entries.values.filter { !saved.contains($0.machineID) } ?? []
        if !placed.isEmpty, ownership?.fence(for: key) != nil {
            try await store.saveSchedule(placed, removing: [])
        }
        owned.insert(key)
        logger.info("polling a pair under its lease", metadata: [
            "credential": "\(key)", "machines": "\(all.count)", "resumed": "\(resumed.count)",
        ])
    }

    /// Forgets a pair this controller no longer holds: its machines, its
    /// schedule (the store keeps it for the next holder) and its state.
    private func drop(_ key: CredentialKey) {
        owned.remove(key)
        let ids = machines.values.filter { $0.key == key }.map(\.id)
        for id in ids { machines.removeValue(forKey: id) }
        schedules.removeValue(forKey: key)
        pauses.removeValue(forKey: key)
        retries.removeValue(forKey: key)
        invalid.removeValue(forKey: key)
        rechecks.removeValue(forKey: key)
        logger.info("pair left to another controller", metadata: ["credential": "\(key)", "machines": "\(ids.count)"])
    }

    /// Whether this controller polls `key`'s pair: always alone, only its
    /// held pairs with several.
    func tracks(_ key: CredentialKey) -> Bool {
        ownership == nil || owned.contains(key)
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
    func readEvents() async throws {
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
                    // Another controller's pair: its holder schedules it.
                    guard tracks(machine.credentialKey) else {
                        forget(machine.id)
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
                    gauges.credentialsChanged = true
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
                    gauges.credentialsChanged = true
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
}
