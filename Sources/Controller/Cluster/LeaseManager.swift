internal import Core
public import Logging
public import ServiceLifecycle

/// This controller's share of the fleet when several controllers share one
/// PostgreSQL store (docs/DESIGN.md §8). Every third of the lease TTL it:
///
/// 1. renews its membership (the controllers table) and learns who else is
///    alive, all on the database's clock;
/// 2. renews the leases it holds; one another controller has claimed is
///    lost (its pair is dropped at once);
/// 3. works out its fair share, ceil(pairs / live controllers), claims free
///    and expired pairs up to it, and hands back what it holds beyond the
///    share while another live controller is below it, or beyond the floor
///    of pairs / controllers while another is below that (after the pair's
///    batch in flight, if any, is over): shares settle within one of each
///    other.
///
/// What it holds is published to ``PairOwnership``, which the poll engine
/// and the shims follow. On a graceful stop it hands back every lease and
/// leaves the controllers table, so the others take its pairs at once
/// instead of after the TTL.
public final class LeaseManager: Service {
    let store: any LeaseStore
    public let identity: ControllerIdentity
    let ttl: Duration
    let ownership: PairOwnership
    let metrics: ControllerMetrics?
    let logger: Logger

    public init(
        store: any LeaseStore, identity: ControllerIdentity, ttl: Duration, ownership: PairOwnership,
        metrics: ControllerMetrics? = nil, logger: Logger
    ) {
        self.store = store
        self.identity = identity
        self.ttl = ttl
        self.ownership = ownership
        self.metrics = metrics
        self.logger = logger
        metrics?.leases(held: 0, liveControllers: 0)
    }

    /// A holder id unique to this process: `host:pid:random`.
    public static func holderID(host: String, pid: Int32) -> String {
        "\(host):\(pid):\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
    }

    /// How often leases are renewed: a third of the TTL, so that two
    /// renewals may fail before a lease runs out.
    var renewInterval: Duration { ttl / 3 }

    /// Renews until the group shuts down (the poller and the shims have
    /// stopped by then: they come after this in the group), then hands
    /// every lease back.
    public func run() async throws {
        await cancelWhenGracefulShutdown { await self.renewLoop() }
        await leave()
    }

    private func renewLoop() async {
        // Joining: say so first, and claim only at the next renewal, once
        // controllers started together have all said so. Otherwise the
        // first to start would claim (and load) every pair, then hand
        // most back: a memory peak of the whole fleet for nothing.
        do {
            _ = try await store.heartbeat(identity, ttl: ttl)
            try await Task.sleep(for: renewInterval)
        } catch is CancellationError {
            return
        } catch {
            logger.warning("could not join the controllers yet", metadata: ["error": "\(error)"])
        }
        var failures = 0
        while !Task.isCancelled {
            var pause = renewInterval
            do {
                pause = try await tick()
                if failures > 0 {
                    logger.notice("leases renewed again", metadata: ["holder": "\(identity.holder)"])
                }
                failures = 0
            } catch is CancellationError {
                return
            } catch {
                failures += 1
                metrics?.leaseRenewalFailed()
                // Each failure is worth a line: leases run out after three
                // in a row.
                logger.warning("could not renew leases", metadata: ["failures": "\(failures)", "error": "\(error)"])
            }
            do {
                try await Task.sleep(for: pause)
            } catch {
                return
            }
        }
    }

    /// One renewal; returns how long to wait for the next: a renewal
    /// interval; a quarter of it while the share is not settled (pairs
    /// handed back, or claimable ones left); or until just after another
    /// holder's lease runs out, when that comes first. A live holder renews
    /// long before, so only a dead one's lease comes that close: its pairs
    /// are claimed as soon as they are free, not up to a renewal later.
    @discardableResult
    func tick() async throws -> Duration {
        // The deadline runs from before the request: the database's clock
        // starts the lease no earlier than this.
        let sent = ContinuousClock.now
        let deadline = sent + ttl - ttl / 10
        let live = try await store.heartbeat(identity, ttl: ttl)
        var held = ownership.fences
        if !held.isEmpty {
            let renewed = try await store.renewLeases(held, ttl: ttl)
            let kept = Set(renewed)
            for fence in held where !kept.contains(fence) {
                metrics?.leaseLost()
                logger.warning("lease lost: another controller holds the pair now", metadata: ["credential": "\(fence.key)", "epoch": "\(fence.epoch)"])
            }
            held = renewed
        }
        ownership.set(held.map { ($0, deadline) })

        let pairs = try await store.workPairs()
        let leases = try await store.leases()
        let me = live.first(where: { $0.identity.holder == identity.holder })
        let now = me?.lastRenewal ?? live.map(\.lastRenewal).max() ?? Timestamp(nanosecondsSinceEpoch: 0)
        let plan = LeaseShare.plan(
            holder: identity.holder, live: live.map(\.identity.holder), pairs: pairs, leases: leases, now: now)

        if !plan.release.isEmpty {
            let releasing = held.filter { plan.release.contains($0.key) }
            held.removeAll { plan.release.contains($0.key) }
            // Stop polling them first, then hand them back once their
            // batch in flight is over.
            ownership.set(held.map { ($0, deadline) })
            await ownership.waitIdle(Set(releasing.map(\.key)), timeout: ttl / 2)
            try await store.releaseLeases(releasing)
            for fence in releasing {
                logger.info("lease handed back for balance", metadata: ["credential": "\(fence.key)", "share": "\(plan.share)"])
            }
        }
        var claimed = 0
        for key in plan.claim {
            let claimSent = ContinuousClock.now
            guard let fence = try await store.claimLease(key, holder: identity.holder, ttl: ttl) else { continue }
            held.append(fence)
            claimed += 1
            logger.info("lease taken", metadata: ["credential": "\(key)", "epoch": "\(fence.epoch)"])
            ownership.set(held.map { ($0.key == key ? (fence, claimSent + ttl - ttl / 10) : ($0, deadline)) })
        }
        metrics?.leases(held: held.count, liveControllers: live.count)
        let unsettled = !plan.release.isEmpty || claimed < plan.claim.count || held.count < plan.share && held.count < pairs.count
        var pause = unsettled ? renewInterval / 4 : renewInterval
        let others = leases.filter { $0.holder != identity.holder && $0.expiresAt > now }
        if let expiry = others.map(\.expiresAt).min() {
            pause = min(pause, (expiry - now) + .milliseconds(50))
        }
        return pause
    }

    /// A clean stop: nothing is polled any more (the poller has stopped by
    /// now), every lease goes back, and this controller leaves.
    func leave() async {
        let held = ownership.fences
        ownership.set([])
        metrics?.leases(held: 0, liveControllers: 0)
        do {
            try await store.leave(holder: identity.holder)
            logger.info("left the controllers; leases handed back", metadata: ["holder": "\(identity.holder)", "leases": "\(held.count)"])
        } catch {
            logger.warning("could not hand back leases; they run out after the TTL", metadata: ["error": "\(error)", "ttl": "\(ttl)"])
        }
    }
}

/// The fair-share rule, on its own so that it can be checked without a
/// database (docs/DESIGN.md §8).
enum LeaseShare {
    struct Plan: Equatable {
        /// ceil(pairs / live controllers).
        var share: Int
        /// Pairs to hand back.
        var release: Set<CredentialKey>
        /// Pairs to try to claim, in order.
        var claim: [CredentialKey]
    }

    /// - Parameters:
    ///   - live: the holders alive now (this one among them).
    ///   - pairs: the pairs that have machines.
    ///   - leases: every lease row; one counts as held while it has not
    ///     expired at `now` (the database's clock).
    static func plan(holder: String, live: [String], pairs: [CredentialKey], leases: [LeaseRecord], now: Timestamp) -> Plan {
        let controllers = Set(live).union([holder])
        let share = pairs.isEmpty ? 0 : (pairs.count + controllers.count - 1) / controllers.count
        let wanted = Set(pairs)
        var holdings: [String: Set<CredentialKey>] = [:]
        var taken: Set<CredentialKey> = []
        for lease in leases where lease.expiresAt > now {
            // A live lease of a holder that left the table still counts as
            // taken until it runs out.
            taken.insert(lease.key)
            holdings[lease.holder, default: []].insert(lease.key)
        }
        let mine = holdings[holder] ?? []
        // Pairs without machines any more go back at once.
        var release = mine.subtracting(wanted)
        let kept = mine.intersection(wanted)
        // Shares settle at floor or ceil of pairs / controllers: hand back
        // down to the floor while another is below it, down to the ceil
        // while another is below that.
        let floor = pairs.count / controllers.count
        let others = controllers.filter { $0 != holder }.map { holdings[$0]?.intersection(wanted).count ?? 0 }
        let target: Int? = others.contains { $0 < floor } ? floor : others.contains { $0 < share } ? share : nil
        if let target, kept.count > target {
            release.formUnion(kept.sorted { $0.description < $1.description }.prefix(kept.count - target))
        }
        var claim: [CredentialKey] = []
        if kept.count < share {
            // Free pairs, in an order of this holder's own, so that
            // controllers claiming at the same moment seldom collide.
            let free = pairs.filter { !taken.contains($0) }.sorted { spread(holder, $0) < spread(holder, $1) }
            claim = Array(free.prefix(share - kept.count))
        }
        return Plan(share: share, release: release, claim: claim)
    }

    /// FNV-1a of the holder and the pair: stable across runs.
    static func spread(_ holder: String, _ key: CredentialKey) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(holder)|\(key)".utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }
}
