internal import Core
internal import Yams
public import Support

/// A scenario file that cannot be used: names the file, the line and column,
/// the place in the document (e.g. `instances[2].timeline[1].state`), and
/// what is wrong.
public typealias ScenarioError = YAMLFileError

extension FakeScenario {
    /// Reads a scenario from a YAML (or JSON) file.
    ///
    /// - Throws: ``ScenarioError`` naming the file, line, place and problem.
    public static func load(path: String) throws(ScenarioError) -> FakeScenario {
        try YAMLReader.load(path: path) { reader, root throws(YAMLFileError) in try reader.scenario(root) }
    }

    /// Parses scenario text; `file` names it in errors.
    public static func parse(_ text: String, file: String) throws(ScenarioError) -> FakeScenario {
        try YAMLReader.parse(text, file: file) { reader, root throws(YAMLFileError) in try reader.scenario(root) }
    }
}

/// The scenario document, read with line numbers in every error.
extension YAMLReader {
    // MARK: - The document

    func scenario(_ root: Node) throws(YAMLFileError) -> FakeScenario {
        let top = try mapping(root, "", allowed: ["name", "cloud_types", "max_batch_size", "credentials", "instances", "fleets", "faults"])
        var scenario = FakeScenario()
        if let node = top["name"] { scenario.name = try string(node, "name") }
        if let node = top["cloud_types"] { scenario.cloudTypes = try stringList(node, "cloud_types") }
        if let node = top["max_batch_size"] {
            let value = try unsigned(node, "max_batch_size")
            guard value <= UInt64(UInt32.max) else { throw fail(node, "max_batch_size", "too large") }
            scenario.maxBatchSize = UInt32(value)
        }
        if let node = top["credentials"] {
            var credentials: [FakeScenario.Credential] = []
            for (index, item) in try sequence(node, "credentials").enumerated() {
                credentials.append(try credential(item, "credentials[\(index)]"))
            }
            scenario.credentials = credentials
        }
        if let node = top["instances"] {
            var seen: Set<String> = []
            for (index, item) in try sequence(node, "instances").enumerated() {
                let instance = try self.instance(item, "instances[\(index)]")
                guard seen.insert(instance.id).inserted else {
                    throw fail(item, "instances[\(index)].id", "instance \"\(instance.id)\" is declared twice")
                }
                scenario.instances.append(instance)
            }
        }
        if let node = top["fleets"] {
            for (index, item) in try sequence(node, "fleets").enumerated() {
                scenario.fleets.append(try fleet(item, "fleets[\(index)]"))
            }
        }
        if let node = top["faults"] {
            for (index, item) in try sequence(node, "faults").enumerated() {
                scenario.faults.append(try fault(item, "faults[\(index)]", credentials: scenario.credentials))
            }
        }
        return scenario
    }

    func credential(_ node: Node, _ place: String) throws(YAMLFileError) -> FakeScenario.Credential {
        let fields = try mapping(node, place, allowed: ["name", "attributes", "valid", "reason"])
        guard let nameNode = fields["name"] else { throw fail(node, place, "a credential needs a name") }
        var credential = FakeScenario.Credential(name: try string(nameNode, "\(place).name"), attributes: [:])
        if let node = fields["attributes"] { credential.attributes = try stringMap(node, "\(place).attributes") }
        if let node = fields["valid"] { credential.valid = try bool(node, "\(place).valid") }
        if let node = fields["reason"] { credential.reason = try string(node, "\(place).reason") }
        return credential
    }

    func instance(_ node: Node, _ place: String) throws(YAMLFileError) -> FakeScenario.Instance {
        let fields = try mapping(node, place, allowed: ["id", "timeline"])
        guard let idNode = fields["id"] else { throw fail(node, place, "an instance needs an id") }
        let id = try string(idNode, "\(place).id")
        guard !id.isEmpty else { throw fail(idNode, "\(place).id", "the id is empty") }
        guard let timelineNode = fields["timeline"] else { throw fail(node, place, "an instance needs a timeline") }
        var timeline: [FakeScenario.Event] = []
        for (index, item) in try sequence(timelineNode, "\(place).timeline").enumerated() {
            timeline.append(try event(item, "\(place).timeline[\(index)]", notBefore: timeline.last?.at))
        }
        guard !timeline.isEmpty else { throw fail(timelineNode, "\(place).timeline", "the timeline is empty") }
        return FakeScenario.Instance(id: id, timeline: timeline)
    }

    func fleet(_ node: Node, _ place: String) throws(YAMLFileError) -> FakeScenario.Fleet {
        let fields = try mapping(node, place, allowed: ["prefix", "count", "interfaces", "timeline"])
        guard let prefixNode = fields["prefix"] else { throw fail(node, place, "a fleet needs an id prefix, e.g. i-fleet-") }
        let prefix = try string(prefixNode, "\(place).prefix")
        guard !prefix.isEmpty else { throw fail(prefixNode, "\(place).prefix", "the prefix is empty") }
        guard let countNode = fields["count"] else { throw fail(node, place, "a fleet needs a count") }
        let count = try unsigned(countNode, "\(place).count")
        guard (1...10_000_000).contains(count) else { throw fail(countNode, "\(place).count", "must be from 1 to 10000000") }
        var interfaceCount: UInt64 = 1
        if let interfacesNode = fields["interfaces"] {
            interfaceCount = try unsigned(interfacesNode, "\(place).interfaces")
            guard interfaceCount <= 8 else { throw fail(interfacesNode, "\(place).interfaces", "at most 8") }
        }
        guard let timelineNode = fields["timeline"] else { throw fail(node, place, "a fleet needs a timeline") }
        var timeline: [FakeScenario.Event] = []
        for (index, item) in try sequence(timelineNode, "\(place).timeline").enumerated() {
            let event = try event(item, "\(place).timeline[\(index)]", notBefore: timeline.last?.at)
            if event.interfaces != nil {
                throw fail(item, "\(place).timeline[\(index)].interfaces", "a fleet's interfaces are generated: set interfaces: N on the fleet")
            }
            timeline.append(event)
        }
        guard !timeline.isEmpty else { throw fail(timelineNode, "\(place).timeline", "the timeline is empty") }
        return FakeScenario.Fleet(prefix: prefix, count: Int(count), interfaceCount: Int(interfaceCount), timeline: timeline)
    }

    static let states: [(String, ProviderV1.InstanceState)] = [
        ("allocating", .allocating), ("provisioning", .provisioning), ("running", .running),
        ("provisioning-error", .provisioningError), ("stopped", .stopped), ("terminated", .terminated),
        ("unknown", .unknown), ("unspecified", .unspecified),
    ]

    func event(_ node: Node, _ place: String, notBefore previous: Duration?) throws(YAMLFileError) -> FakeScenario.Event {
        let fields = try mapping(node, place, allowed: ["at", "state", "raw_status", "message", "interfaces", "gone"])
        guard let atNode = fields["at"] else { throw fail(node, place, "an event needs a time, e.g. at: 5s") }
        var event = FakeScenario.Event(at: try duration(atNode, "\(place).at"))
        if let previous, event.at < previous {
            throw fail(atNode, "\(place).at", "events must be in time order (\(event.at) comes before \(previous))")
        }
        if let node = fields["state"] { event.state = try choice(node, "\(place).state", Self.states) }
        if let node = fields["raw_status"] { event.rawStatus = try string(node, "\(place).raw_status") }
        if let node = fields["message"] { event.message = try string(node, "\(place).message") }
        if let node = fields["gone"] { event.gone = try bool(node, "\(place).gone") }
        if let node = fields["interfaces"] {
            var interfaces: [ProviderV1.NetworkInterface] = []
            for (index, item) in try sequence(node, "\(place).interfaces").enumerated() {
                interfaces.append(try interface(item, "\(place).interfaces[\(index)]"))
            }
            event.interfaces = interfaces
        }
        if event.gone, event.state != nil || event.interfaces != nil {
            throw fail(node, place, "a gone event cannot also set state or interfaces")
        }
        return event
    }

    func interface(_ node: Node, _ place: String) throws(YAMLFileError) -> ProviderV1.NetworkInterface {
        let fields = try mapping(node, place, allowed: [
            "device_index", "mac_address", "provider_id", "subnet", "network", "name", "cidr",
            "addresses", "shadow_addresses", "primary", "disabled",
        ])
        var interface = ProviderV1.NetworkInterface()
        if let node = fields["device_index"] {
            let value = try unsigned(node, "\(place).device_index")
            guard value <= UInt64(Int32.max) else { throw fail(node, "\(place).device_index", "too large") }
            interface.deviceIndex = Int32(value)
        }
        if let node = fields["mac_address"] { interface.macAddress = try string(node, "\(place).mac_address") }
        if let node = fields["provider_id"] { interface.providerID = try string(node, "\(place).provider_id") }
        if let node = fields["subnet"] { interface.providerSubnetID = try string(node, "\(place).subnet") }
        if let node = fields["network"] { interface.providerNetworkID = try string(node, "\(place).network") }
        if let node = fields["name"] { interface.interfaceName = try string(node, "\(place).name") }
        if let node = fields["cidr"] { interface.cidr = try string(node, "\(place).cidr") }
        if let node = fields["primary"] { interface.primary = try bool(node, "\(place).primary") }
        if let node = fields["disabled"] { interface.disabled = try bool(node, "\(place).disabled") }
        if let node = fields["addresses"] { interface.addresses = try addresses(node, "\(place).addresses") }
        if let node = fields["shadow_addresses"] { interface.shadowAddresses = try addresses(node, "\(place).shadow_addresses") }
        return interface
    }

    func addresses(_ node: Node, _ place: String) throws(YAMLFileError) -> [ProviderV1.Address] {
        var result: [ProviderV1.Address] = []
        for (index, item) in try sequence(node, place).enumerated() {
            let itemPlace = "\(place)[\(index)]"
            let fields = try mapping(item, itemPlace, allowed: ["value", "type", "scope", "cidr"])
            guard let valueNode = fields["value"] else { throw fail(item, itemPlace, "an address needs a value") }
            var address = ProviderV1.Address()
            address.value = try string(valueNode, "\(itemPlace).value")
            if let node = fields["type"] {
                address.type = try choice(node, "\(itemPlace).type", [("ipv4", .ipv4), ("ipv6", .ipv6), ("hostname", .hostname)])
            } else {
                address.type = address.value.contains(":") ? .ipv6 : .ipv4
            }
            if let node = fields["scope"] {
                address.scope = try choice(node, "\(itemPlace).scope", [
                    ("public", .public), ("cloud-local", .cloudLocal), ("machine-local", .machineLocal), ("link-local", .linkLocal),
                ])
            }
            if let node = fields["cidr"] { address.cidr = try string(node, "\(itemPlace).cidr") }
            result.append(address)
        }
        return result
    }

    static let faultKinds: [(String, Instancepoller_Fake_V1_FaultKind)] = [
        ("auth-failure", .authFailure), ("permission-denied", .permissionDenied), ("throttle", .throttle),
        ("latency", .latency), ("crash", .crash), ("hang", .hang), ("unavailable", .unavailable),
    ]

    func fault(_ node: Node, _ place: String, credentials: [FakeScenario.Credential]?) throws(YAMLFileError) -> FakeScenario.Fault {
        let fields = try mapping(node, place, allowed: [
            "kind", "methods", "credential", "from", "until", "delay", "retry_after", "after_calls", "message",
        ])
        guard let kindNode = fields["kind"] else { throw fail(node, place, "a fault needs a kind") }
        var fault = FakeScenario.Fault()
        fault.kind = try choice(kindNode, "\(place).kind", Self.faultKinds)
        if let node = fields["methods"] {
            fault.methods = try stringList(node, "\(place).methods")
            for (index, method) in fault.methods.enumerated() where !ProviderV1.methodNames.contains(method) {
                throw fail(node, "\(place).methods[\(index)]",
                           "unknown method \"\(method)\" (expected one of: \(ProviderV1.methodNames.joined(separator: ", ")))")
            }
        }
        if let node = fields["credential"] {
            fault.credential = try string(node, "\(place).credential")
            if let credentials, !credentials.contains(where: { $0.name == fault.credential }) {
                throw fail(node, "\(place).credential", "no credential named \"\(fault.credential)\" in credentials")
            }
        }
        if let node = fields["from"] { fault.fromNano = try duration(node, "\(place).from").totalNanoseconds }
        if let node = fields["until"] {
            fault.untilNano = try duration(node, "\(place).until").totalNanoseconds
            guard fault.untilNano > fault.fromNano else { throw fail(node, "\(place).until", "must come after from") }
        }
        if let node = fields["delay"] { fault.delayNano = try duration(node, "\(place).delay").totalNanoseconds }
        if let node = fields["retry_after"] { fault.retryAfterNano = try duration(node, "\(place).retry_after").totalNanoseconds }
        if let node = fields["after_calls"] { fault.afterCalls = try unsigned(node, "\(place).after_calls") }
        if let node = fields["message"] { fault.message = try string(node, "\(place).message") }
        switch fault.kind {
        case .latency where fields["delay"] == nil:
            throw fail(node, place, "a latency fault needs a delay")
        case .crash where fields["after_calls"] == nil:
            throw fail(node, place, "a crash fault needs after_calls")
        default:
            break
        }
        return fault
    }
}
