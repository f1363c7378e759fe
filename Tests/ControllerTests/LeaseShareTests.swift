@testable import Controller
import Testing

/// The fair-share rule of ``LeaseShare`` (docs/DESIGN.md §8), without a
/// database: who claims, who hands back, and that a fleet of controllers
/// following it settles on shares that differ by at most one.
@Suite("Lease share")
struct LeaseShareTests {
    static let now = Timestamp(nanosecondsSinceEpoch: 1_000_000_000_000)

    static func pairs(_ count: Int) -> [CredentialKey] {
        (0..<count).map { CredentialKey(provider: "p\($0 % 3)", name: "c\($0)") }
    }

    static func lease(_ key: CredentialKey, _ holder: String, expired: Bool = false) -> LeaseRecord {
        LeaseRecord(key: key, holder: holder, epoch: 1, expiresAt: expired ? Timestamp(nanosecondsSinceEpoch: now.nanosecondsSinceEpoch - 1_000_000_000) : now + .seconds(5))
    }

    @Test("alone, a controller claims every pair")
    func aloneClaimsEverything() {
        let pairs = Self.pairs(7)
        let plan = LeaseShare.plan(holder: "a", live: ["a"], pairs: pairs, leases: [], now: Self.now)
        #expect(plan.share == 7)
        #expect(Set(plan.claim) == Set(pairs))
        #expect(plan.release.isEmpty)
    }

    @Test("a newcomer under its share makes the holder of everything hand back down to the share")
    func newcomerGetsItsShare() {
        let pairs = Self.pairs(30)
        let leases = pairs.map { Self.lease($0, "a") }
        let holder = LeaseShare.plan(holder: "a", live: ["a", "b", "c"], pairs: pairs, leases: leases, now: Self.now)
        #expect(holder.share == 10)
        #expect(holder.release.count == 20)
        #expect(holder.claim.isEmpty)
        // Before anything is handed back, the newcomer has nothing free to claim.
        let newcomer = LeaseShare.plan(holder: "b", live: ["a", "b", "c"], pairs: pairs, leases: leases, now: Self.now)
        #expect(newcomer.claim.isEmpty)
        #expect(newcomer.release.isEmpty)
    }

    @Test("expired leases are free: a dead controller's pairs are claimed up to the share")
    func expiredLeasesAreClaimed() {
        let pairs = Self.pairs(9)
        let leases = pairs.enumerated().map { index, key in
            Self.lease(key, ["a", "b", "dead"][index % 3], expired: index % 3 == 2)
        }
        let plan = LeaseShare.plan(holder: "a", live: ["a", "b"], pairs: pairs, leases: leases, now: Self.now)
        #expect(plan.share == 5)
        #expect(plan.claim.count == 2)
        #expect(plan.claim.allSatisfy { key in leases.contains { $0.key == key && $0.holder == "dead" } })
    }

    @Test("over the share but nobody under it: nothing is handed back (no churn)")
    func noChurnWhenOthersAreAtTheirShare() {
        let pairs = Self.pairs(10)
        // a holds 4, b holds 3, c holds 3: share 4; nobody is under.
        let holders = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"]
        let leases = zip(pairs, holders).map { Self.lease($0, $1) }
        let plan = LeaseShare.plan(holder: "a", live: ["a", "b", "c"], pairs: pairs, leases: leases, now: Self.now)
        #expect(plan.share == 4)
        #expect(plan.release.isEmpty)
        #expect(plan.claim.isEmpty)
    }

    @Test("a pair whose machines are all gone is handed back at once")
    func pairsWithoutMachinesGoBack() {
        let pairs = Self.pairs(3)
        let gone = CredentialKey(provider: "p9", name: "old")
        let leases = (pairs + [gone]).map { Self.lease($0, "a") }
        let plan = LeaseShare.plan(holder: "a", live: ["a"], pairs: pairs, leases: leases, now: Self.now)
        #expect(plan.release == [gone])
    }

    /// Controllers ticking in turn on a shared lease table, as
    /// ``LeaseManager`` does (claims that collide go to the first).
    @Test(
        "three controllers following the rule settle with shares that differ by at most one",
        arguments: [1, 2, 29, 30, 31, 100], [false, true])
    func settles(pairCount: Int, firstHeldEverything: Bool) {
        let pairs = Self.pairs(pairCount)
        let holders = ["a", "b", "c"]
        // The first controller may have run alone before the others came.
        var table: [CredentialKey: String] = firstHeldEverything ? Dictionary(uniqueKeysWithValues: pairs.map { ($0, "a") }) : [:]
        for round in 0..<10 {
            for holder in holders {
                let leases = table.map { Self.lease($0.key, $0.value) }
                let plan = LeaseShare.plan(holder: holder, live: holders, pairs: pairs, leases: leases, now: Self.now)
                for key in plan.release { table.removeValue(forKey: key) }
                for key in plan.claim where table[key] == nil { table[key] = holder }
                let share = (pairCount + holders.count - 1) / holders.count
                // Held beyond share + 1 while another is under its share
                // only until the holder's own turn hands it back.
                guard round > 0 || !firstHeldEverything else { continue }
                for other in holders {
                    let held = table.values.filter { $0 == other }.count
                    let someoneUnder = holders.contains { h in table.values.filter { $0 == h }.count < share }
                    #expect(!(held > share + 1 && someoneUnder), "round \(round): \(other) holds \(held), share \(share)")
                }
            }
        }
        #expect(table.count == pairCount)
        let counts = holders.map { holder in table.values.filter { $0 == holder }.count }
        #expect(counts.max()! - counts.min()! <= 1, "\(counts)")
    }
}
