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

    public init(
        _ code: RPCStatusCode,
        _ message: String,
        metadata: Metadata = [],
        details: [Google_Protobuf_Any] = []
    ) {
        self.code = code
        self.message = message
        self.metadata = metadata
        self.details = details
    }

    /// "NotFound: no such machine".
    public var description: String { "\(code): \(message)" }

    /// The server's throttling hint, from response metadata `retry-after-ms`.
    public var retryAfter: Duration? {
        metadata.first(RPCError.retryAfterKey).flatMap(Int64.init).map { .milliseconds($0) }
    }

    /// Metadata key of the throttling hint, in milliseconds.
    public static let retryAfterKey = "retry-after-ms"

    /// Maps any error thrown by a handler to the status sent on the wire.
    /// Errors that are not `RPCError` become Unknown (or Cancelled) with
    /// their description: handler authors keep secrets out of error texts.
    public init(from error: any Error) {
        switch error {
        case let error as RPCError:
            self = error
        case is CancellationError:
            self.init(.cancelled, "the call was cancelled")
        default:
            self.init(.unknown, String(describing: error))
        }
    }
}
