public import SwiftProtobuf

/// The error of a failed call: a status code that says whether to retry, a
/// message for people, and optional metadata (e.g. `retry-after-ms`) and
/// `google.rpc.Status` details.
///
/// Messages must never contain a secret: they are logged and shown.
public struct RPCError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: RPCStatusCode
    public var message: String
    public var metadata: Metadata
    public var details: [Google_Protobuf_Any]
    /// The error this one was made from (``init(from:)`` sets it), for
    /// whoever handles it in this process: a log, a test, a retry decision.
    /// It is never sent on the wire, is not part of equality or the hash,
    /// and is not in ``description``: it may be any error, and any error
    /// may quote what it was given, secrets included.
    public var cause: (any Error)?

    public init(
        _ code: RPCStatusCode,
        _ message: String,
        metadata: Metadata = [],
        details: [Google_Protobuf_Any] = [],
        cause: (any Error)? = nil
    ) {
        self.code = code
        self.message = message
        self.metadata = metadata
        self.details = details
        self.cause = cause
    }

    /// "NotFound: no such machine". Never the cause.
    public var description: String { "\(code): \(message)" }

    /// The server's throttling hint, from response metadata `retry-after-ms`.
    public var retryAfter: Duration? {
        metadata.first(RPCError.retryAfterKey).flatMap(Int64.init).map { .milliseconds($0) }
    }

    /// Metadata key of the throttling hint, in milliseconds.
    public static let retryAfterKey = "retry-after-ms"

    /// Maps any error thrown by a handler to the status sent on the wire,
    /// keeping the error as the ``cause``: an `RPCError` as it is; an
    /// ``RPCErrorConvertible`` as it says; a cancellation as Cancelled; any
    /// other error as Unknown with its description (handler authors keep
    /// secrets out of error texts).
    public init(from error: any Error) {
        switch error {
        case let error as RPCError:
            self = error
        case let error as any RPCErrorConvertible:
            self = error.rpcError
            if cause == nil { cause = error }
        case is CancellationError:
            self.init(.cancelled, "the call was cancelled", cause: error)
        default:
            self.init(.unknown, String(describing: error), cause: error)
        }
    }

    /// Code, message, metadata and details: what goes on the wire.
    public static func == (lhs: RPCError, rhs: RPCError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message && lhs.metadata == rhs.metadata && lhs.details == rhs.details
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
        hasher.combine(metadata)
        hasher.combine(details)
    }
}

/// An error that knows which status it is on the wire: a domain error
/// (the store's, the supervisor's …) says NotFound, Unavailable and so on
/// here, and ``RPCError/init(from:)`` uses it, so that a caller sees what
/// happened and whether a retry may help instead of Unknown.
///
/// The status's message is logged and shown: never a secret.
public protocol RPCErrorConvertible: Error {
    /// The status to answer with. ``RPCError/init(from:)`` sets its cause
    /// to this error when the status has none.
    var rpcError: RPCError { get }
}
