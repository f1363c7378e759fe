internal import Core
internal import VSphereProvider

/// vCenter's SOAP answers, as `provider-shim vsphere` reads them
/// (docs/DESIGN.md §7.3).
///
/// Properties: the bytes are either read into a retrieve result whose
/// every object has a managed object reference, or refused with one
/// ``VSphereAnswerError`` on one line; likewise for a fault. A result that
/// is read maps to the contract's answers: Instances index-aligned with the
/// ids asked, interfaces with device indexes 0, 1, 2… in order, provider
/// ids that are device keys, only the first primary, and addresses whose
/// value is a canonical IP address of their type, whose scope is the
/// address's, and whose CIDR is empty or the address's own network.
enum VSphereSOAPTarget {
    static func run(_ input: [UInt8]) throws(FuzzPropertyViolation) {
        let result: VSphereRetrieveResult?
        do {
            result = try VSphereSOAP.parseRetrieveResult(input)
        } catch {
            try check(error)
            result = nil
        }
        if let result { try check(result) }
        let fault: VSphereFault?
        do {
            fault = try VSphereSOAP.parseFault(input)
        } catch {
            try check(error)
            fault = nil
        }
        if let fault { try singleLine(fault.description, "a fault") }
    }

    private static func violation(_ text: String) -> FuzzPropertyViolation {
        FuzzPropertyViolation(.vsphereSOAP, text)
    }

    private static func singleLine(_ text: String, _ what: String) throws(FuzzPropertyViolation) {
        guard !text.isEmpty else { throw violation("\(what) is described by an empty text") }
        guard !text.contains(where: \.isNewline) else { throw violation("\(what) is described on several lines: \(text.debugDescription)") }
    }

    private static func check(_ error: VSphereAnswerError) throws(FuzzPropertyViolation) {
        try singleLine(error.description, "the refusal")
    }

    private static func check(_ result: VSphereRetrieveResult) throws(FuzzPropertyViolation) {
        if let token = result.token, token.isEmpty { throw violation("read an empty token") }
        for machine in result.objects {
            guard !machine.ref.type.isEmpty, !machine.ref.value.isEmpty else {
                throw violation("read an object without a managed object reference: \(machine.ref)")
            }
            try check(VSphereMapping.interfaces(machine), of: machine)
        }
        // Every name and UUID read, an unknown id and a repeated one.
        var ids = result.objects.compactMap(\.name) + result.objects.compactMap(\.instanceUUID)
        ids += ["no-such-vm", ids.first ?? "", "00000000-0000-0000-0000-000000000000"]
        let answer = VSphereMapping.instances(ids: ids, machines: result.objects)
        guard answer.results.map(\.instanceID) == ids else { throw violation("Instances is not index-aligned with the ids") }
        for (id, found) in zip(ids, answer.results) where found.found {
            guard result.objects.contains(where: { $0.name == id || $0.instanceUUID?.lowercased() == id.lowercased() }) else {
                throw violation("found \(id.debugDescription), which no object is named or has as UUID")
            }
            try singleLine(found.status.message.isEmpty ? "-" : found.status.message, "a status message")
        }
    }

    private static func check(_ interfaces: [ProviderV1.NetworkInterface], of machine: VSphereVirtualMachine) throws(FuzzPropertyViolation) {
        guard interfaces.count == (machine.cards ?? []).count else {
            throw violation("\(machine.ref): \((machine.cards ?? []).count) cards gave \(interfaces.count) interfaces")
        }
        for (index, interface) in interfaces.enumerated() {
            guard interface.deviceIndex == Int32(index) else {
                throw violation("\(machine.ref): interface \(index) has device index \(interface.deviceIndex)")
            }
            guard Int32(interface.providerID) != nil else {
                throw violation("\(machine.ref): interface \(index)'s provider id \(interface.providerID.debugDescription) is not a device key")
            }
            guard interface.primary == (index == 0) else { throw violation("\(machine.ref): interface \(index) primary is \(interface.primary)") }
            var values: Set<String> = []
            for address in interface.addresses {
                guard values.insert(address.value).inserted else { throw violation("\(machine.ref): address \(address.value) twice on one interface") }
                try check(address, of: machine)
            }
            guard interface.cidr.isEmpty || interface.addresses.contains(where: { $0.cidr == interface.cidr }) else {
                throw violation("\(machine.ref): interface CIDR \(interface.cidr) is none of its addresses'")
            }
        }
    }

    private static func check(_ address: ProviderV1.Address, of machine: VSphereVirtualMachine) throws(FuzzPropertyViolation) {
        guard let ip = VSphereIPAddress(address.value), ip.description == address.value else {
            throw violation("\(machine.ref): address \(address.value.debugDescription) is not a canonical IP address")
        }
        guard address.type == (ip.isIPv4 ? .ipv4 : .ipv6) else { throw violation("\(machine.ref): address \(address.value) has type \(address.type)") }
        guard address.scope == ip.scope else { throw violation("\(machine.ref): address \(address.value) has scope \(address.scope), not \(ip.scope)") }
        guard !address.cidr.isEmpty else { return }
        let parts = address.cidr.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let network = VSphereIPAddress(String(parts[0])), let prefix = Int(parts[1]),
              network.description == String(parts[0]), network.isIPv4 == ip.isIPv4, (0...ip.bitCount).contains(prefix),
              network.masked(prefix) == network, ip.masked(prefix) == network
        else {
            throw violation("\(machine.ref): address \(address.value) has CIDR \(address.cidr.debugDescription), not its network")
        }
    }
}
