public import Core

/// What `provider-shim fake` simulates: credentials, instances with
/// timelines relative to the shim's start, and faults. Read from a YAML or
/// JSON file by ``FakeScenario/load(path:)``; the format is documented in
/// scripts/scenarios/example.yaml.
public struct FakeScenario: Sendable {
    public var name: String
    /// CloudSpec.type values served.
    public var cloudTypes: [String]
    /// Capabilities.max_batch_size announced in the handshake (0: none).
    public var maxBatchSize: UInt32
    /// nil: any credential is accepted.
    public var credentials: [Credential]?
    public var instances: [Instance]
    public var faults: [Fault]

    public init(
        name: String = "scenario",
        cloudTypes: [String] = ["fake"],
        maxBatchSize: UInt32 = 0,
        credentials: [Credential]? = nil,
        instances: [Instance] = [],
        faults: [Fault] = []
    ) {
        self.name = name
        self.cloudTypes = cloudTypes
        self.maxBatchSize = maxBatchSize
        self.credentials = credentials
        self.instances = instances
        self.faults = faults
    }

    /// A credential the fake cloud knows. A request's credential matches it
    /// when every attribute listed here has the same value in the request.
    public struct Credential: Sendable, Hashable {
        public var name: String
        public var attributes: [String: String]
        /// false: the cloud rejects it (ValidateCredential says invalid,
        /// cloud calls answer Unauthenticated).
        public var valid: Bool
        public var reason: String

        public init(name: String, attributes: [String: String], valid: Bool = true, reason: String = "") {
            self.name = name
            self.attributes = attributes
            self.valid = valid
            self.reason = reason
        }
    }

    public struct Instance: Sendable, Hashable {
        public var id: String
        /// In time order. Before the first event the instance does not exist.
        public var timeline: [Event]

        public init(id: String, timeline: [Event]) {
            self.id = id
            self.timeline = timeline
        }
    }

    /// A change to an instance at a time since the shim started. Fields left
    /// nil keep their earlier value.
    public struct Event: Sendable, Hashable {
        public var at: Duration
        public var state: ProviderV1.InstanceState?
        public var rawStatus: String?
        public var message: String?
        public var interfaces: [ProviderV1.NetworkInterface]?
        /// true: the instance disappears (not found) from here on; a later
        /// event brings it back.
        public var gone: Bool

        public init(
            at: Duration,
            state: ProviderV1.InstanceState? = nil,
            rawStatus: String? = nil,
            message: String? = nil,
            interfaces: [ProviderV1.NetworkInterface]? = nil,
            gone: Bool = false
        ) {
            self.at = at
            self.state = state
            self.rawStatus = rawStatus
            self.message = message
            self.interfaces = interfaces
            self.gone = gone
        }
    }

    /// A fault, as the control service's `Fault` message describes it.
    public typealias Fault = Instancepoller_Fake_V1_Fault
}
