public import Core
internal import Foundation
internal import SwiftProtobuf

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
    /// Generated instances, for load: no per-instance data is kept.
    public var fleets: [Fleet] = []
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

    /// `count` instances `<prefix>1` … `<prefix><count>` sharing one
    /// timeline; each has `interfaceCount` interfaces with addresses made
    /// from its number (eth0 in 10.0.0.0/8, eth1 in 172.16.0.0/12, …).
    public struct Fleet: Sendable, Hashable {
        public var prefix: String
        public var count: Int
        public var interfaceCount: Int
        public var timeline: [Event]

        public init(prefix: String, count: Int, interfaceCount: Int, timeline: [Event]) {
            self.prefix = prefix
            self.count = count
            self.interfaceCount = interfaceCount
            self.timeline = timeline
        }

        /// The member's number, if `id` is one of this fleet's.
        func index(of id: String) -> Int? {
            guard id.hasPrefix(prefix), let number = Int(id.dropFirst(prefix.count)), (1...count).contains(number),
                  id == "\(prefix)\(number)"
            else { return nil }
            return number
        }

        /// Member `number`'s interfaces.
        func interfaces(of number: Int) -> [ProviderV1.NetworkInterface] {
            let bytes = (number >> 16 & 0xFF, number >> 8 & 0xFF, number & 0xFF)
            return (0..<interfaceCount).map { index in
                let network = index == 0 ? "10.\(bytes.0)" : "\(172 + index - 1).\(16 + bytes.0 % 16)"
                return .with {
                    $0.deviceIndex = Int32(index)
                    $0.interfaceName = "eth\(index)"
                    $0.macAddress = String(format: "02:%02x:%02x:%02x:%02x:%02x", index, number >> 24 & 0xFF, bytes.0, bytes.1, bytes.2)
                    $0.providerID = "eni-\(prefix)\(number)-\(index)"
                    $0.primary = index == 0
                    $0.addresses = [.with {
                        $0.value = "\(network).\(bytes.1).\(bytes.2)"
                        $0.type = .ipv4
                        $0.scope = .cloudLocal
                    }]
                }
            }
        }
    }

    /// A fault, as the control service's `Fault` message describes it.
    public typealias Fault = Instancepoller_Fake_V1_Fault
}
