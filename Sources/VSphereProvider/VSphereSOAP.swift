internal import CloudSupport
internal import Foundation

/// A managed object reference: `<obj type="VirtualMachine">vm-42</obj>`.
public struct VSphereMoRef: Hashable, Sendable, CustomStringConvertible {
    public var type: String
    public var value: String

    public init(type: String, value: String) {
        self.type = type
        self.value = value
    }

    public var description: String { "\(type):\(value)" }

    /// A stable order: by type, then by the number after the last "-" when
    /// both have one (vm-9 before vm-10, the older first), then by value.
    public static func precedes(_ a: VSphereMoRef, _ b: VSphereMoRef) -> Bool {
        if a.type != b.type { return a.type < b.type }
        func split(_ value: String) -> (String, Int?) {
            guard let dash = value.lastIndex(of: "-") else { return (value, nil) }
            return (String(value[..<dash]), Int(value[value.index(after: dash)...]))
        }
        let (prefixA, numberA) = split(a.value)
        let (prefixB, numberB) = split(b.value)
        if prefixA == prefixB, let numberA, let numberB, numberA != numberB { return numberA < numberB }
        return a.value < b.value
    }
}

/// One virtual Ethernet card of `config.hardware.device`.
public struct VSphereEthernetCard: Sendable, Equatable {
    /// The device key, unique within the VM (e.g. 4000).
    public var key: Int32
    /// Its `xsi:type`, e.g. "VirtualVmxnet3"; "" when the answer gave none.
    public var type: String
    /// `deviceInfo.label`, e.g. "Network adapter 1".
    public var label: String
    public var macAddress: String
    /// The port group name (`backing.deviceName`), the distributed port
    /// group key (`backing.port.portgroupKey`) or the opaque network id.
    public var network: String
    /// `connectable.connected`; nil when the answer does not say.
    public var connected: Bool?

    public init(key: Int32, type: String = "", label: String = "", macAddress: String = "", network: String = "", connected: Bool? = nil) {
        self.key = key
        self.type = type
        self.label = label
        self.macAddress = macAddress
        self.network = network
        self.connected = connected
    }
}

/// One IP address a guest reports, with its prefix length when given.
public struct VSphereGuestIP: Sendable, Equatable {
    public var address: String
    public var prefixLength: Int?

    public init(address: String, prefixLength: Int?) {
        self.address = address
        self.prefixLength = prefixLength
    }
}

/// One `GuestNicInfo` of `guest.net`: what VMware Tools report about a NIC.
public struct VSphereGuestNIC: Sendable, Equatable {
    /// The device key of the card (`deviceConfigId`); nil or -1 when the
    /// guest NIC names no device.
    public var deviceConfigID: Int32?
    public var macAddress: String
    public var network: String
    /// `ipConfig.ipAddress` (address and prefix), or else the plain
    /// `ipAddress` list (no prefix).
    public var addresses: [VSphereGuestIP]

    public init(deviceConfigID: Int32? = nil, macAddress: String = "", network: String = "", addresses: [VSphereGuestIP] = []) {
        self.deviceConfigID = deviceConfigID
        self.macAddress = macAddress
        self.network = network
        self.addresses = addresses
    }
}

/// One object of a retrieve result, read as a virtual machine: the
/// properties the backend asks for, each nil when the answer lacks it.
public struct VSphereVirtualMachine: Sendable, Equatable {
    public var ref: VSphereMoRef
    public var name: String?
    /// `config.instanceUuid`.
    public var instanceUUID: String?
    /// `runtime.powerState`: poweredOn, poweredOff, suspended.
    public var powerState: String?
    /// `runtime.connectionState`: connected, disconnected, orphaned, inaccessible, invalid.
    public var connectionState: String?
    /// `guest.guestState`: running, notRunning, shuttingDown, resetting, standby, unknown.
    public var guestState: String?
    /// The Ethernet cards of `config.hardware.device`, in device order.
    public var cards: [VSphereEthernetCard]?
    /// `guest.net`.
    public var guestNICs: [VSphereGuestNIC]?
    /// The object no longer exists: its `missingSet` says
    /// ManagedObjectNotFound (`reportMissingObjectsInResults`).
    public var gone = false

    public init(ref: VSphereMoRef) { self.ref = ref }
}

/// A `RetrievePropertiesEx` or `ContinueRetrievePropertiesEx` answer.
public struct VSphereRetrieveResult: Sendable, Equatable {
    /// Set when more objects remain: pass it to ContinueRetrievePropertiesEx.
    public var token: String?
    public var objects: [VSphereVirtualMachine]

    public init(token: String? = nil, objects: [VSphereVirtualMachine] = []) {
        self.token = token
        self.objects = objects
    }
}

/// A SOAP fault: the vSphere fault's type (e.g. "InvalidLogin", from the
/// detail's `xsi:type`; "" when the fault carries no detail) and its
/// `faultstring`.
public struct VSphereFault: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var message: String

    public init(name: String, message: String) {
        self.name = name
        self.message = message
    }

    public var description: String {
        switch (name.isEmpty, message.isEmpty) {
        case (true, true): "an unnamed fault"
        case (true, false): message
        case (false, true): name
        case (false, false): "\(name): \(message)"
        }
    }
}

/// Why an answer could not be read. Its description is one line.
public enum VSphereAnswerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Bytes that ``XMLTree/read(_:)`` does not read, and why ("is not
    /// XML", "is not UTF-8", "has a document type or other declaration", …:
    /// the words after "the answer").
    case notXML(String)
    /// XML, but not a SOAP envelope with a body.
    case notSOAP(String)
    /// The body is a SOAP fault.
    case fault(VSphereFault)
    /// A SOAP answer that is not the expected one, or breaks its schema.
    case malformed(String)

    public var description: String {
        let text: String
        switch self {
        case .notXML(let why): text = "the answer \(why)"
        case .notSOAP(let what): text = "the answer is not a SOAP envelope: \(what)"
        case .fault(let fault): text = "vSphere fault \(fault)"
        case .malformed(let what): text = "malformed answer: \(what)"
        }
        return VSphereSOAP.oneLine(text)
    }
}

/// Reading and writing the vSphere Web Services API's SOAP 1.1 messages
/// (namespace `urn:vim25`), docs/DESIGN.md §7.3.
///
/// The readers are public for the `vsphere-soap` fuzz target: any bytes are
/// either read into a well-formed value or refused with one
/// ``VSphereAnswerError`` whose description is a single line.
public enum VSphereSOAP {
    /// The API version asked for (`SOAPAction: urn:vim25/6.5`): every
    /// vCenter from 6.5 on speaks it, and it has every call and property
    /// the backend uses.
    public static let apiVersion = "6.5"

    // MARK: - Reading

    /// Reads a `RetrievePropertiesEx` or `ContinueRetrievePropertiesEx`
    /// answer: the objects (each with its managed object reference) and
    /// the token when more remain. An answer without a `returnval` (vSphere's
    /// "nothing matched") is an empty result.
    public static func parseRetrieveResult(_ body: [UInt8]) throws(VSphereAnswerError) -> VSphereRetrieveResult {
        let response = try responseElement(body, expecting: ["RetrievePropertiesExResponse", "ContinueRetrievePropertiesExResponse"])
        let returnvals = response.children.filter { $0.name == "returnval" }
        guard returnvals.count <= 1 else { throw .malformed("\(response.name) holds \(returnvals.count) returnval elements") }
        guard let returnval = returnvals.first else { return VSphereRetrieveResult() }
        var result = VSphereRetrieveResult()
        for child in returnval.children {
            switch child.name {
            case "token":
                let token = child.text.trimmingCharacters(in: .whitespacesAndNewlines)
                guard !token.isEmpty else { throw .malformed("an empty token") }
                guard result.token == nil else { throw .malformed("two tokens") }
                result.token = token
            case "objects":
                result.objects.append(try object(child))
            default:
                continue
            }
        }
        return result
    }

    /// The fault in `body`, or nil when `body` is a SOAP envelope without
    /// a fault. Throws when `body` is not a SOAP envelope.
    public static func parseFault(_ body: [UInt8]) throws(VSphereAnswerError) -> VSphereFault? {
        let content = try bodyContent(body)
        return content.first { $0.name == "Fault" }.map(fault)
    }

    /// The one element of the body of a SOAP answer, which must be one of
    /// `expecting`; a fault is thrown as ``VSphereAnswerError/fault(_:)``.
    static func responseElement(_ body: [UInt8], expecting: Set<String>) throws(VSphereAnswerError) -> XMLTree {
        let content = try bodyContent(body)
        if let faultElement = content.first(where: { $0.name == "Fault" }) { throw .fault(fault(faultElement)) }
        guard content.count == 1, let element = content.first else {
            throw .malformed("the SOAP body holds \(content.count) elements, not one \(expecting.sorted().joined(separator: " or "))")
        }
        guard expecting.contains(element.name) else {
            throw .malformed("expected \(expecting.sorted().joined(separator: " or ")), got \(quoted(element.name))")
        }
        return element
    }

    /// The elements in the SOAP Body of `body`.
    private static func bodyContent(_ body: [UInt8]) throws(VSphereAnswerError) -> [XMLTree] {
        // Foundation's XMLParser on Linux leaks a little memory on each
        // document it cannot read: a body without an Envelope (a proxy's
        // error page, say) is refused before it gets there.
        guard contains(body, Array("Envelope".utf8)) else {
            throw body.contains(UInt8(ascii: "<")) ? .notSOAP("it holds no Envelope element") : .notXML("is not XML")
        }
        // XMLTree's screen refuses what a SOAP answer never holds and the
        // parser must not see (a document type, entities, other encodings).
        let tree: XMLTree
        do {
            tree = try XMLTree.read(Data(body))
        } catch {
            throw .notXML(error.problem)
        }
        guard tree.name == "Envelope" else { throw .notSOAP("the root element is \(quoted(tree.name)), not Envelope") }
        let bodies = tree.children.filter { $0.name == "Body" }
        guard bodies.count == 1, let soapBody = bodies.first else { throw .notSOAP("the envelope holds \(bodies.count) Body elements, not one") }
        return soapBody.children
    }

    private static func fault(_ element: XMLTree) -> VSphereFault {
        let message = element.string("faultstring")
        var name = ""
        if let detail = element.child("detail")?.children.first {
            if let type = detail.xsiType, !type.isEmpty {
                name = type
            } else if detail.name.hasSuffix("Fault"), detail.name.count > 5 {
                name = String(detail.name.dropLast(5))
            } else {
                name = detail.name
            }
        }
        return VSphereFault(name: oneLine(name, limit: 100), message: oneLine(message))
    }

    private static func object(_ element: XMLTree) throws(VSphereAnswerError) -> VSphereVirtualMachine {
        let refs = element.children.filter { $0.name == "obj" }
        guard refs.count == 1, let ref = try moRef(refs[0]) else {
            throw .malformed("an object without one managed object reference")
        }
        var vm = VSphereVirtualMachine(ref: ref)
        vm.gone = element.children.contains { missing in
            missing.name == "missingSet" && missing["fault", "fault"]?.xsiType == "ManagedObjectNotFound"
        }
        for property in element.children where property.name == "propSet" {
            guard let nameElement = property.child("name") else { throw .malformed("a property of \(ref) without a name") }
            let name = nameElement.text.trimmingCharacters(in: .whitespacesAndNewlines)
            // A property set to nothing comes without a value.
            guard let value = property.child("val") else { continue }
            let text = value.text.trimmingCharacters(in: .whitespacesAndNewlines)
            switch name {
            case "name": vm.name = text
            case "config.instanceUuid": vm.instanceUUID = text
            case "runtime.powerState": vm.powerState = text
            case "runtime.connectionState": vm.connectionState = text
            case "guest.guestState": vm.guestState = text
            case "config.hardware.device": vm.cards = try cards(value, of: ref)
            case "guest.net": vm.guestNICs = value.children.map(guestNIC)
            default: continue
            }
        }
        return vm
    }

    /// A managed object reference element; nil when it lacks its type or value.
    static func moRef(_ element: XMLTree) throws(VSphereAnswerError) -> VSphereMoRef? {
        let value = element.text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let type = element.attribute("type")?.trimmingCharacters(in: .whitespaces), !type.isEmpty, !value.isEmpty else { return nil }
        return VSphereMoRef(type: type, value: value)
    }

    /// The xsi:types of vSphere's virtual Ethernet cards (VirtualEthernetCard and its subtypes).
    public static let ethernetCardTypes: Set<String> = [
        "VirtualEthernetCard", "VirtualE1000", "VirtualE1000e", "VirtualPCNet32", "VirtualVmxnet", "VirtualVmxnet2",
        "VirtualVmxnet3", "VirtualVmxnet3Vrdma", "VirtualSriovEthernetCard",
    ]

    private static func cards(_ value: XMLTree, of ref: VSphereMoRef) throws(VSphereAnswerError) -> [VSphereEthernetCard] {
        var cards: [VSphereEthernetCard] = []
        for device in value.children {
            let type = device.xsiType ?? ""
            // A card is a known card type, or any device with a MAC address
            // (a card type newer than this list).
            guard ethernetCardTypes.contains(type) || device.child("macAddress") != nil else { continue }
            guard let key = Int32(device.string("key")) else {
                throw .malformed("a network card of \(ref) without a device key")
            }
            let backing = device.child("backing")
            var network = backing?.string("deviceName") ?? ""
            if network.isEmpty { network = backing?.string("port", "portgroupKey") ?? "" }
            if network.isEmpty { network = backing?.string("opaqueNetworkId") ?? "" }
            var connected: Bool?
            if let flag = device.child("connectable")?.child("connected") {
                connected = try boolean(flag.text, "connectable.connected of card \(key) of \(ref)")
            }
            cards.append(VSphereEthernetCard(
                key: key, type: type, label: oneLine(device.string("deviceInfo", "label"), limit: 200),
                macAddress: device.string("macAddress").lowercased(), network: network, connected: connected
            ))
        }
        return cards
    }

    private static func guestNIC(_ element: XMLTree) -> VSphereGuestNIC {
        var nic = VSphereGuestNIC(
            deviceConfigID: Int32(element.string("deviceConfigId")),
            macAddress: element.string("macAddress").lowercased(),
            network: element.string("network")
        )
        for entry in element.child("ipConfig")?.children ?? [] where entry.name == "ipAddress" {
            let address = entry.string("ipAddress")
            guard !address.isEmpty else { continue }
            nic.addresses.append(VSphereGuestIP(address: address, prefixLength: Int(entry.string("prefixLength"))))
        }
        if nic.addresses.isEmpty {
            for entry in element.children where entry.name == "ipAddress" {
                let address = entry.text.trimmingCharacters(in: .whitespacesAndNewlines)
                if !address.isEmpty { nic.addresses.append(VSphereGuestIP(address: address, prefixLength: nil)) }
            }
        }
        return nic
    }

    private static func boolean(_ text: String, _ what: String) throws(VSphereAnswerError) -> Bool {
        switch text.trimmingCharacters(in: .whitespacesAndNewlines) {
        case "true", "1": return true
        case "false", "0": return false
        case let other: throw .malformed("\(what) is \(quoted(other)), not a boolean")
        }
    }

    /// Reads an answer whose `returnval` is a managed object reference, or
    /// absent (nil): `FindByInventoryPath`, `CreateContainerView`.
    static func parseMoRefAnswer(_ body: [UInt8], _ method: String) throws(VSphereAnswerError) -> VSphereMoRef? {
        let response = try responseElement(body, expecting: ["\(method)Response"])
        guard let returnval = response.child("returnval") else { return nil }
        guard let ref = try moRef(returnval) else { throw .malformed("\(method) answered a reference without a type or value") }
        return ref
    }

    /// The managed objects a session starts from (`RetrieveServiceContent`).
    struct ServiceContent: Sendable {
        var rootFolder: VSphereMoRef
        var propertyCollector: VSphereMoRef
        var viewManager: VSphereMoRef
        var sessionManager: VSphereMoRef
        var searchIndex: VSphereMoRef
    }

    static func parseServiceContent(_ body: [UInt8]) throws(VSphereAnswerError) -> ServiceContent {
        let response = try responseElement(body, expecting: ["RetrieveServiceContentResponse"])
        guard let content = response.child("returnval") else { throw .malformed("RetrieveServiceContent answered no service content") }
        func ref(_ name: String) throws(VSphereAnswerError) -> VSphereMoRef {
            guard let element = content.child(name), let ref = try moRef(element) else {
                throw .malformed("the service content has no \(name); is this a vCenter?")
            }
            return ref
        }
        return ServiceContent(
            rootFolder: try ref("rootFolder"), propertyCollector: try ref("propertyCollector"), viewManager: try ref("viewManager"),
            sessionManager: try ref("sessionManager"), searchIndex: try ref("searchIndex")
        )
    }

    /// Checks a `Login` answer (the session itself is the cookie).
    static func parseLogin(_ body: [UInt8]) throws(VSphereAnswerError) {
        _ = try responseElement(body, expecting: ["LoginResponse"])
    }

    /// Checks an answer that carries nothing (`DestroyView`, `Logout`, ...).
    static func parseEmpty(_ body: [UInt8], _ method: String) throws(VSphereAnswerError) {
        _ = try responseElement(body, expecting: ["\(method)Response"])
    }

    // MARK: - Writing

    /// A request: the envelope around `<method xmlns="urn:vim25">` with
    /// `_this` and the given inner XML (already escaped).
    static func envelope(_ method: String, this: VSphereMoRef, _ inner: String = "") -> [UInt8] {
        var text = #"<?xml version="1.0" encoding="UTF-8"?>"#
        text += #"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#
        text += #"<soapenv:Body><\#(method) xmlns="urn:vim25">"#
        text += ref("_this", this)
        text += inner
        text += "</\(method)></soapenv:Body></soapenv:Envelope>"
        return Array(text.utf8)
    }

    static func ref(_ element: String, _ ref: VSphereMoRef) -> String {
        #"<\#(element) type="\#(escape(ref.type))">\#(escape(ref.value))</\#(element)>"#
    }

    static func element(_ name: String, _ text: String) -> String {
        "<\(name)>\(escape(text))</\(name)>"
    }

    /// The property filter for `properties` of the virtual machines under
    /// a container view (`objects` nil), or of the given machines.
    static func retrieveSpec(properties: [String], view: VSphereMoRef?, objects: [VSphereMoRef] = [], maxObjects: Int) -> String {
        var spec = "<specSet><propSet><type>VirtualMachine</type>"
        for property in properties { spec += element("pathSet", property) }
        spec += "</propSet>"
        if let view {
            spec += "<objectSet>" + ref("obj", view) + "<skip>true</skip>"
            spec += #"<selectSet xsi:type="TraversalSpec"><name>traverseView</name><type>ContainerView</type><path>view</path><skip>false</skip></selectSet>"#
            spec += "</objectSet>"
        } else {
            for object in objects { spec += "<objectSet>" + ref("obj", object) + "<skip>false</skip></objectSet>" }
            // A machine destroyed since it was looked up is left out of the
            // answer rather than failing it (ManagedObjectNotFound).
            spec += "<reportMissingObjectsInResults>true</reportMissingObjectsInResults>"
        }
        spec += "</specSet>"
        spec += "<options>" + element("maxObjects", "\(maxObjects)") + "</options>"
        return spec
    }

    /// `text` escaped for XML character data and attribute values.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text.unicodeScalars {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    /// True when `text` holds only characters XML 1.0 can carry.
    static func isXMLSafe(_ text: String) -> Bool {
        text.unicodeScalars.allSatisfy { scalar in
            switch scalar.value {
            case 0x9, 0xA, 0xD, 0x20...0xD7FF, 0xE000...0xFFFD, 0x10000...0x10FFFF: true
            default: false
            }
        }
    }

    // MARK: - Helpers

    /// `text` on one line (controls and line breaks become spaces) and at
    /// most `limit` characters long.
    static func oneLine(_ text: String, limit: Int = 500) -> String {
        var out = String(String.UnicodeScalarView(text.unicodeScalars.map { scalar in
            scalar.properties.generalCategory == .control || scalar.properties.generalCategory == .lineSeparator
                || scalar.properties.generalCategory == .paragraphSeparator ? " " : scalar
        }))
        out = out.trimmingCharacters(in: .whitespaces)
        if out.count > limit { out = String(out.prefix(limit)) + "…" }
        return out
    }

    static func quoted(_ text: String) -> String { "\"\(oneLine(text, limit: 100))\"" }

    private static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return false }
        return haystack.indices.dropLast(needle.count - 1).contains { start in
            haystack[start..<start + needle.count].elementsEqual(needle)
        }
    }
}
