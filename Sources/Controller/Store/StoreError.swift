public import Core

/// A store operation that failed; the message says what and where, and the
/// kind what it means for the caller: whether the thing was there, whether
/// trying again may help. The kind picks the status the control API answers
/// with (``rpcError``).
public struct StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable, CaseIterable {
        /// No such machine or credential.
        case notFound
        /// A machine (or other key) that is already stored.
        case alreadyExists
        /// The database could not serve now: another writer held it past
        /// the busy timeout, or the disk failed or is full. Trying again
        /// later may succeed.
        case unavailable
        /// A value the store cannot take (e.g. too big).
        case invalidArgument
        /// The store's state refuses the operation (a constraint, a
        /// read-only or untrusted file).
        case failedPrecondition
        /// A batch's results refused by fencing: the controller no longer
        /// holds the pair's lease at the epoch it polled under.
        case leaseLost
        /// Anything else: a bug, or a database that holds what it should not.
        case `internal`
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// No machine with this id.
    public static func noMachine(_ id: String) -> StoreError {
        StoreError(.notFound, "no machine \(MachineFields.quoted(id))")
    }

    /// A machine with this id is stored already.
    public static func machineExists(_ id: String) -> StoreError {
        StoreError(.alreadyExists, "machine \(MachineFields.quoted(id)) already exists")
    }

    /// The fence's lease is held by another, or at another epoch.
    public static func leaseLost(_ fence: LeaseFence) -> StoreError {
        StoreError(.leaseLost, "lease on \(fence.key) lost: \(fence.holder) no longer holds it at epoch \(fence.epoch)")
    }

    /// No credential `provider/name`.
    public static func noCredential(provider: String, name: String) -> StoreError {
        StoreError(.notFound, "no credential \(provider)/\(name)")
    }
}

extension StoreError: RPCErrorConvertible {
    public var rpcError: RPCError {
        let code: RPCStatusCode = switch kind {
        case .notFound: .notFound
        case .alreadyExists: .alreadyExists
        case .unavailable: .unavailable
        case .invalidArgument: .invalidArgument
        case .failedPrecondition: .failedPrecondition
        // Retrying cannot help the same holder: the lease is another's.
        case .leaseLost: .failedPrecondition
        case .internal: .internal
        }
        return RPCError(code, message)
    }
}
