internal import Core
internal import PostgresNIO

/// Membership and leases (docs/DESIGN.md §8): every time is the database's
/// clock (`now()`, the transaction's start), so controllers whose clocks
/// disagree still agree on who holds what.
///
/// A lease whose time ran out but that nobody claimed can still be renewed
/// by its holder: its epoch is unchanged, so every fence taken under it is
/// still the newest, and a claim by another controller (which raises the
/// epoch) is what ends it. A controller that was paused past its TTL thus
/// carries on when it wakes before anyone else took the pair, and finds its
/// writes refused (``StoreError/Kind/leaseLost``) when someone did.
extension PostgresMachineStore {
    public func heartbeat(_ controller: ControllerIdentity, ttl: Duration) async throws -> [ControllerRecord] {
        let lifetime = try Self.microseconds(ttl)
        return try await transaction("renewing controller \(controller.holder)") { connection in
            try await connection.execute("""
                INSERT INTO controllers (holder, host, pid, version, last_renewal, expires_at)
                VALUES (\(controller.holder), \(controller.host), \(controller.pid), \(controller.version),
                    now(), now() + \(lifetime) * interval '1 microsecond')
                ON CONFLICT (holder) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
                    last_renewal = EXCLUDED.last_renewal, expires_at = EXCLUDED.expires_at
                """)
            // Restarted controllers come back as new holders: the rows of
            // those gone for an hour go.
            try await connection.execute("DELETE FROM controllers WHERE expires_at < now() - interval '1 hour'")
            return try await Self.liveControllers(connection)
        }
    }

    public func controllers() async throws -> [ControllerRecord] {
        try await withConnection("reading the controllers") { connection in try await Self.liveControllers(connection) }
    }

    public func leases() async throws -> [LeaseRecord] {
        try await withConnection("reading the leases") { connection in
            try await connection.values(
                """
                SELECT provider, credential, holder, epoch, \(unescaped: Self.microseconds("expires_at")) FROM leases ORDER BY key
                """
            ) { row in
                LeaseRecord(
                    key: CredentialKey(provider: try row.at(0), name: try row.at(1)), holder: try row.at(2), epoch: try row.at(3),
                    expiresAt: Self.timestamp(microseconds: try row.at(4)))
            }
        }
    }

    public func claimLease(_ key: CredentialKey, holder: String, ttl: Duration) async throws -> LeaseFence? {
        let lifetime = try Self.microseconds(ttl)
        // A claim of a lease a batch is being written under waits for that
        // batch's share lock (``check(_:on:)``), then finds the epoch it
        // raises.
        let epochs = try await withConnection("claiming the lease on \(key) for \(holder)") { connection in
            try await connection.values(
                """
                INSERT INTO leases (key, provider, credential, holder, epoch, expires_at)
                VALUES (\(key.description), \(key.provider), \(key.name), \(holder), 1, now() + \(lifetime) * interval '1 microsecond')
                ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, epoch = leases.epoch + 1, expires_at = EXCLUDED.expires_at
                WHERE leases.expires_at < now()
                RETURNING epoch
                """, { try $0.at(0, as: Int64.self) })
        }
        return epochs.first.map { LeaseFence(key: key, holder: holder, epoch: $0) }
    }

    public func renewLeases(_ fences: [LeaseFence], ttl: Duration) async throws -> [LeaseFence] {
        let lifetime = try Self.microseconds(ttl)
        guard !fences.isEmpty else { return [] }
        let renewed = try await withConnection("renewing \(fences.count) leases") { connection in
            try await connection.values(
                """
                UPDATE leases l SET expires_at = now() + \(lifetime) * interval '1 microsecond'
                FROM UNNEST(\(fences.map(\.key.description))::text[], \(fences.map(\.holder))::text[], \(fences.map(\.epoch))::bigint[])
                    AS f(key, holder, epoch)
                WHERE l.key = f.key AND l.holder = f.holder AND l.epoch = f.epoch
                RETURNING l.key, l.holder, l.epoch
                """
            ) { row -> Lease in Lease(key: try row.at(0), holder: try row.at(1), epoch: try row.at(2)) }
        }
        let held = Set(renewed)
        return fences.filter { held.contains(Lease(key: $0.key.description, holder: $0.holder, epoch: $0.epoch)) }
    }

    public func releaseLeases(_ fences: [LeaseFence]) async throws {
        guard !fences.isEmpty else { return }
        try await withConnection("releasing \(fences.count) leases") { connection in
            try await connection.execute("""
                UPDATE leases l SET expires_at = LEAST(l.expires_at, now() - interval '1 microsecond')
                FROM UNNEST(\(fences.map(\.key.description))::text[], \(fences.map(\.holder))::text[], \(fences.map(\.epoch))::bigint[])
                    AS f(key, holder, epoch)
                WHERE l.key = f.key AND l.holder = f.holder AND l.epoch = f.epoch
                """)
        }
    }

    public func leave(holder: String) async throws {
        try await transaction("removing controller \(holder)") { connection in
            try await connection.execute("""
                UPDATE leases SET expires_at = LEAST(expires_at, now() - interval '1 microsecond') WHERE holder = \(holder)
                """)
            try await connection.execute("DELETE FROM controllers WHERE holder = \(holder)")
        }
    }

    /// A lease as a statement returns it.
    private struct Lease: Hashable {
        var key: String
        var holder: String
        var epoch: Int64
    }

    private static func liveControllers(_ connection: PostgresConnection) async throws -> [ControllerRecord] {
        try await connection.values(
            """
            SELECT holder, host, pid, version, \(unescaped: microseconds("last_renewal")), \(unescaped: microseconds("expires_at"))
            FROM controllers WHERE expires_at > now() ORDER BY holder
            """
        ) { row in
            ControllerRecord(
                identity: ControllerIdentity(holder: try row.at(0), host: try row.at(1), pid: try row.at(2), version: try row.at(3)),
                lastRenewal: timestamp(microseconds: try row.at(4)), expiresAt: timestamp(microseconds: try row.at(5)))
        }
    }

    /// A TTL in whole microseconds (the database's resolution); it must be
    /// positive.
    private static func microseconds(_ ttl: Duration) throws -> Int64 {
        let value = ttl.totalNanoseconds / 1000
        guard value > 0 else { throw StoreError(.invalidArgument, "a lease or membership TTL must be positive, not \(ttl)") }
        return value
    }

    /// A TIMESTAMPTZ column as microseconds since the epoch, exactly.
    private static func microseconds(_ column: String) -> String {
        "(extract(epoch FROM \(column)) * 1000000)::bigint"
    }

    private static func timestamp(microseconds: Int64) -> Timestamp {
        Timestamp(nanosecondsSinceEpoch: microseconds * 1000)
    }
}
