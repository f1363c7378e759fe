public import NIOCore
internal import SwiftProtobuf

/// What a server handler sees of a call besides its message.
public struct RPCServerContext: Sendable {
    /// Service and method called.
    public var service: String
    public var method: String
    /// Request metadata, in order.
    public var metadata: Metadata
    /// When the caller stops waiting (from `timeout_nano`), or nil. The
    /// handler's task is cancelled at this instant and the caller answered
    /// with DeadlineExceeded.
    public var deadline: ContinuousClock.Instant?
    /// The process that called, from SO_PEERCRED.
    public var peer: PeerCredentials?

    public init(
        service: String,
        method: String,
        metadata: Metadata = [],
        deadline: ContinuousClock.Instant? = nil,
        peer: PeerCredentials? = nil
    ) {
        self.service = service
        self.method = method
        self.metadata = metadata
        self.deadline = deadline
        self.peer = peer
    }

    /// Time left before the deadline, or nil when there is none.
    public var timeRemaining: Duration? {
        deadline.map { $0 - .now }
    }
}

/// A successful answer: the serialized response and response metadata.
public struct RPCResponse: Sendable {
    public var payload: ByteBuffer
    public var metadata: Metadata
    public init(payload: ByteBuffer, metadata: Metadata = []) {
        self.payload = payload
        self.metadata = metadata
    }
}

/// Handles one call on serialized bytes. Throwing an ``RPCError`` answers
/// with its status; any other error answers Unknown with its description.
public typealias RPCMethodHandler = @Sendable (ByteBuffer, RPCServerContext) async throws -> RPCResponse

/// The services a server answers, by service and method name.
public struct RPCServiceRegistry: Sendable {
    struct Key: Hashable {
        var service: String
        var method: String
    }

    private var methods: [Key: RPCMethodHandler] = [:]
    private var services: Set<String> = []

    public init() {}

    /// Registers a handler on serialized bytes, replacing any earlier one.
    public mutating func register(service: String, method: String, handler: @escaping RPCMethodHandler) {
        methods[Key(service: service, method: method)] = handler
        services.insert(service)
    }

    /// Registers a typed handler: the request is decoded (InvalidArgument
    /// when it cannot be) and the response encoded.
    public mutating func register<Request, Response>(
        _ descriptor: MethodDescriptor<Request, Response>,
        handler: @escaping @Sendable (Request, RPCServerContext) async throws -> Response
    ) {
        register(service: descriptor.service, method: descriptor.method) { payload, context in
            let request: Request
            do {
                request = try Request(buffer: payload)
            } catch {
                throw RPCError(.invalidArgument, "cannot decode \(Request.protoMessageName) for \(descriptor.fullName): \(error)")
            }
            let response = try await handler(request, context)
            do {
                return RPCResponse(payload: try response.serializedBuffer())
            } catch {
                throw RPCError(.internal, "cannot encode \(Response.protoMessageName): \(error)")
            }
        }
    }

    /// The handler for a call, or the Unimplemented error to answer with.
    public func handler(service: String, method: String) -> Result<RPCMethodHandler, RPCError> {
        if let handler = methods[Key(service: service, method: method)] {
            return .success(handler)
        }
        if services.contains(service) {
            return .failure(RPCError(.unimplemented, "service \(service) has no method \(method)"))
        }
        return .failure(RPCError(.unimplemented, "service \(service) is not served here"))
    }

    /// Names of the registered services.
    public var serviceNames: [String] { services.sorted() }
}
