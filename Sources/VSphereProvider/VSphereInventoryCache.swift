internal import NIOConcurrencyHelpers

/// The names and instance UUIDs of each scope's machines, kept between
/// calls (docs/DESIGN.md §7.3), so that a batch reads the properties of its
/// own machines only instead of the whole scope.
///
/// An entry is only a guess at which machine an id names. Every call reads
/// the machines it matched by reference and checks that each still bears
/// the id; a machine gone or renamed, and an id the entry does not know,
/// make the call read the scope anew. So an id is never reported not found
/// from an old entry, and a machine is never reported under a name it no
/// longer has. What an entry can still miss until it is `maxAge` old: a
/// machine that moved out of the scope's folder, and another machine taking
/// a name whose oldest bearer is still there (the count in the "one of N
/// VMs" note).
///
/// Keyed by endpoint, user (what a user may see differs) and folder path;
/// at most `maxEntries` scopes, the oldest read dropped first.
final class VSphereInventoryCache: Sendable {
    struct Entry: Sendable {
        var inventory: VSphereMapping.Inventory
        var readAt: ContinuousClock.Instant
    }

    /// How long an entry is used; zero turns the cache off.
    let maxAge: Duration
    let maxEntries: Int
    private let entries = NIOLockedValueBox<[String: Entry]>([:])

    init(maxAge: Duration, maxEntries: Int = 64) {
        self.maxAge = maxAge
        self.maxEntries = maxEntries
    }

    static func key(_ target: VSphereClient.Target, folderPath: String) -> String {
        "\(target.endpoint.url)|\(target.credentials.user)|\(folderPath)"
    }

    /// The entry for `key` if it is younger than `maxAge`.
    func inventory(_ key: String, now: ContinuousClock.Instant = .now) -> VSphereMapping.Inventory? {
        guard maxAge > .zero else { return nil }
        return entries.withLockedValue { entries in
            guard let entry = entries[key] else { return nil }
            guard now - entry.readAt < maxAge else {
                entries[key] = nil
                return nil
            }
            return entry.inventory
        }
    }

    func store(_ key: String, _ inventory: VSphereMapping.Inventory, readAt: ContinuousClock.Instant) {
        guard maxAge > .zero else { return }
        entries.withLockedValue { entries in
            entries[key] = Entry(inventory: inventory, readAt: readAt)
            while entries.count > maxEntries, let oldest = entries.min(by: { $0.value.readAt < $1.value.readAt })?.key {
                entries[oldest] = nil
            }
        }
    }

    var count: Int { entries.withLockedValue { $0.count } }
}
