/// A gRPC status code (google.rpc.Code), as ttrpc carries in
/// `google.rpc.Status.code`. Unknown values are kept as they are.
public struct RPCStatusCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let ok = Self(rawValue: 0)
    public static let cancelled = Self(rawValue: 1)
    public static let unknown = Self(rawValue: 2)
    public static let invalidArgument = Self(rawValue: 3)
    public static let deadlineExceeded = Self(rawValue: 4)
    public static let notFound = Self(rawValue: 5)
    public static let alreadyExists = Self(rawValue: 6)
    public static let permissionDenied = Self(rawValue: 7)
    public static let resourceExhausted = Self(rawValue: 8)
    public static let failedPrecondition = Self(rawValue: 9)
    public static let aborted = Self(rawValue: 10)
    public static let outOfRange = Self(rawValue: 11)
    public static let unimplemented = Self(rawValue: 12)
    public static let `internal` = Self(rawValue: 13)
    public static let unavailable = Self(rawValue: 14)
    public static let dataLoss = Self(rawValue: 15)
    public static let unauthenticated = Self(rawValue: 16)

    private static let names = [
        "OK", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
        "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
        "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
    ]

    /// "NotFound", or "code 42" for a value outside google.rpc.Code.
    public var description: String {
        Self.names.indices.contains(Int(rawValue)) ? Self.names[Int(rawValue)] : "code \(rawValue)"
    }

    /// Whether a caller may retry the same call later and expect a different
    /// answer (the transport or the cloud was momentarily unable to serve).
    public var isRetryable: Bool {
        self == .unavailable || self == .resourceExhausted || self == .deadlineExceeded || self == .aborted
    }
}
