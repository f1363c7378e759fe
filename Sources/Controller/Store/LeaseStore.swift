/// Leases: how several controllers sharing one database split the fleet
/// (docs/DESIGN.md §8). The unit of work is a (provider, credential)
/// pair; a controller polls a pair only while it holds the pair's lease,
/// and every write of a batch's results checks that it still does
/// (holder and epoch: fencing). Lease times are the database's clock, never
/// a controller's.
///
/// A lease held by one controller is renewed at a third of its TTL; one
/// that expired may be claimed by any controller, which makes the epoch
/// go up. A controller paused past its TTL thus finds its writes refused
/// (``StoreError/Kind/leaseLost``) once another has claimed the pair.

/// What proves a controller still holds a pair: checked, in the same
/// transaction, by every write of a batch's results.
public struct LeaseFence: Hashable, Sendable, CustomStringConvertible {
    public var key: CredentialKey
    public var holder: String
    /// Raised each time the lease changes hands.
    public var epoch: Int64

    public init(key: CredentialKey, holder: String, epoch: Int64) {
        self.key = key
        self.holder = holder
        self.epoch = epoch
    }

    public var description: String { "\(key) held by \(holder) at epoch \(epoch)" }
}

/// One lease as the leases table holds it.
public struct LeaseRecord: Hashable, Sendable {
    public var key: CredentialKey
    public var holder: String
    public var epoch: Int64
    /// The database's clock.
    public var expiresAt: Timestamp

    public init(key: CredentialKey, holder: String, epoch: Int64, expiresAt: Timestamp) {
        self.key = key
        self.holder = holder
        self.epoch = epoch
        self.expiresAt = expiresAt
    }

    public var fence: LeaseFence { LeaseFence(key: key, holder: holder, epoch: epoch) }
}

/// Who a controller is, as the other controllers see it.
public struct ControllerIdentity: Hashable, Sendable {
    /// Unique per controller process: `host:pid:random` unless configured.
    public var holder: String
    public var host: String
    public var pid: Int32
    public var version: String

    public init(holder: String, host: String, pid: Int32, version: String) {
        self.holder = holder
        self.host = host
        self.pid = pid
        self.version = version
    }
}

/// A controller that renewed its membership within the TTL.
public struct ControllerRecord: Hashable, Sendable {
    public var identity: ControllerIdentity
    /// When it last renewed (the database's clock).
    public var lastRenewal: Timestamp
    public var expiresAt: Timestamp

    public init(identity: ControllerIdentity, lastRenewal: Timestamp, expiresAt: Timestamp) {
        self.identity = identity
        self.lastRenewal = lastRenewal
        self.expiresAt = expiresAt
    }
}

/// A store that several controllers share: membership and leases, on the
/// database's clock.
public protocol LeaseStore: MachineStore {
    /// Records that `controller` is alive until the database's now + `ttl`;
    /// returns every controller alive now (itself included), by holder.
    func heartbeat(_ controller: ControllerIdentity, ttl: Duration) async throws -> [ControllerRecord]
    /// Every controller alive now, by holder.
    func controllers() async throws -> [ControllerRecord]
    /// Every lease, live or expired, by key.
    func leases() async throws -> [LeaseRecord]
    /// Claims the pair for `holder` if nobody holds it or its lease expired
    /// (database clock): `INSERT … ON CONFLICT … WHERE expires_at < now()`.
    /// Returns the new fence (epoch one more than the last), or nil when
    /// another holds it.
    func claimLease(_ key: CredentialKey, holder: String, ttl: Duration) async throws -> LeaseFence?
    /// Extends each lease still held with its fence's epoch to now + `ttl`;
    /// returns the ones renewed (a lease another has claimed is missing).
    func renewLeases(_ fences: [LeaseFence], ttl: Duration) async throws -> [LeaseFence]
    /// Ends these leases now, so that another controller may claim them at
    /// once (a lease another holds by now is left alone).
    func releaseLeases(_ fences: [LeaseFence]) async throws
    /// A clean stop: releases every lease of `holder` and removes it from
    /// the controllers.
    func leave(holder: String) async throws
}
