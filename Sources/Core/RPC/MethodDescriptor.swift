public import SwiftProtobuf

/// Names one method of a service and the message types it exchanges, so that
/// client and server agree on both at compile time.
public struct MethodDescriptor<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>: Hashable, Sendable {
    /// Fully qualified service name, e.g. "instancepoller.provider.v1.Provider".
    public var service: String
    /// Method name, e.g. "Instances".
    public var method: String

    public init(service: String, method: String) {
        self.service = service
        self.method = method
    }

    /// "instancepoller.provider.v1.Provider/Instances".
    public var fullName: String { "\(service)/\(method)" }
}
