import AsyncHTTPClient
import CloudSupport
import Core
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import ProviderShim
import SwiftProtobuf
import Testing
import TestSupport
@testable import VSphereProvider

/// The vsphere backend's parts: reading vCenter's answers (captured from
/// govmomi's simulator, committed as the vsphere-soap fuzz seeds), faults
/// and their codes, addresses, states, endpoints; and the backend against
/// a scripted vCenter on loopback for what the simulator never does:
/// paging by its own will, NotAuthenticated after a fresh login, 5xx,
/// HTML, throttling.
@Suite("vSphere backend units")
struct VSphereUnitTests {
    /// A captured answer (Fuzz/corpus/vsphere-soap).
    static func captured(_ name: String) throws -> [UInt8] {
        let path = "\(BuiltProducts.repositoryRoot)/Fuzz/corpus/vsphere-soap/\(name)"
        return Array(try #require(FileManager.default.contents(atPath: path), "\(path) is committed"))
    }

    static func soap(_ body: String) -> [UInt8] {
        Array("""
            <?xml version="1.0" encoding="UTF-8"?>
            <soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" \
            xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>\(body)</soapenv:Body></soapenv:Envelope>
            """.utf8)
    }

    // MARK: - Reading answers

    @Test func aPageWithATokenIsRead() throws {
        let first = try VSphereSOAP.parseRetrieveResult(try Self.captured("retrieve-page-with-token"))
        #expect(first.token == "page-1")
        #expect(first.objects.map(\.ref) == ["vm-71", "vm-68", "vm-77"].map { VSphereMoRef(type: "VirtualMachine", value: $0) })
        #expect(first.objects.map(\.name) == ["worker-1", "api-1", "twin"])
        #expect(first.objects.map(\.powerState) == ["poweredOn", "poweredOn", "poweredOff"])
        #expect(first.objects.map(\.guestState) == ["running", "running", "notRunning"])
        #expect(first.objects.allSatisfy { $0.connectionState == "connected" && $0.instanceUUID?.count == 36 })
        let second = try VSphereSOAP.parseRetrieveResult(try Self.captured("continue-page-with-token"))
        #expect(second.token == "page-2", "a ContinueRetrievePropertiesEx answer, with the next token")
        #expect(second.objects.first?.name == "web-1")
        let all = try VSphereSOAP.parseRetrieveResult(try Self.captured("retrieve-all-status"))
        #expect(all.token == nil)
        #expect(all.objects.count == 7)
    }

    @Test func devicesAndGuestNICsBecomeInterfaces() throws {
        let result = try VSphereSOAP.parseRetrieveResult(try Self.captured("retrieve-devices-and-guest-nics"))
        #expect(result.objects.map(\.ref.value) == ["vm-59", "vm-68"], "the destroyed vm-9999 is left out")
        let web = result.objects[0]
        #expect(web.cards?.map(\.type) == ["VirtualVmxnet3", "VirtualE1000e", "VirtualE1000"], "the cards of all devices, in device order")
        #expect(web.cards?.map(\.key) == [202, 203, 204])
        #expect(web.cards?.map(\.network) == ["VM Network", "dvportgroup-13", "VM Network"], "a port group name, a distributed port group key")
        #expect(web.cards?.map(\.connected) == [true, true, false])
        #expect(web.guestNICs?.map(\.deviceConfigID) == [202, 203], "the third card is not reported by the guest")
        let interfaces = VSphereMapping.interfaces(web)
        #expect(interfaces.map(\.deviceIndex) == [0, 1, 2])
        #expect(interfaces.map(\.providerID) == ["202", "203", "204"])
        #expect(interfaces.map(\.primary) == [true, false, false])
        #expect(interfaces.map(\.disabled) == [false, false, true])
        #expect(interfaces.map(\.macAddress) == ["00:0c:29:31:37:64", "00:0c:29:32:37:64", "00:0c:29:33:37:64"])
        #expect(interfaces[0].addresses.map(\.value) == ["10.0.0.5", "2001:db8:0:1::5", "fe80::250:56ff:fe00:5"])
        #expect(interfaces[0].addresses.map(\.cidr) == ["10.0.0.0/24", "2001:db8:0:1::/64", "fe80::/64"])
        #expect(interfaces[0].addresses.map(\.scope) == [.cloudLocal, .public, .linkLocal])
        #expect(interfaces[0].cidr == "10.0.0.0/24")
        #expect(interfaces[1].addresses.map(\.scope) == [.cloudLocal, .public])
        #expect(interfaces[2].addresses.isEmpty && interfaces[2].cidr.isEmpty)

        // api-1's guest NICs name no device (deviceConfigId -1): matched by MAC.
        let api = result.objects[1]
        #expect(api.guestNICs?.map(\.deviceConfigID) == [-1, -1])
        let apiInterfaces = VSphereMapping.interfaces(api)
        #expect(apiInterfaces.map { $0.addresses.map(\.value) } == [["100.64.1.2", "198.51.100.20"], ["172.16.5.4", "fd00:1::4"]])
        #expect(apiInterfaces[1].addresses.map(\.scope) == [.cloudLocal, .cloudLocal])
    }

    @Test func aCardIsFoundByItsTypeOrItsMAC() throws {
        let answer = Self.soap("""
            <RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-1</obj>
            <propSet><name>config.hardware.device</name><val xsi:type="ArrayOfVirtualDevice">
            <VirtualDevice xsi:type="VirtualDisk"><key>2000</key></VirtualDevice>
            <VirtualDevice xsi:type="VirtualSriovEthernetCard"><key>4001</key><macAddress>00:50:56:AA:00:01</macAddress>
              <backing xsi:type="VirtualEthernetCardOpaqueNetworkBackingInfo"><opaqueNetworkId>nsx-1</opaqueNetworkId></backing></VirtualDevice>
            <VirtualDevice xsi:type="VirtualFutureNic"><key>4002</key><macAddress>00:50:56:aa:00:02</macAddress></VirtualDevice>
            <VirtualDevice xsi:type="VirtualE1000"><key>4003</key><macAddress>00:50:56:aa:00:03</macAddress></VirtualDevice>
            </val></propSet>
            <propSet><name>guest.net</name><val xsi:type="ArrayOfGuestNicInfo">
            <GuestNicInfo><macAddress>00:50:56:aa:00:03</macAddress><ipAddress>192.0.2.10</ipAddress><ipAddress>2001:DB8::A</ipAddress></GuestNicInfo>
            <GuestNicInfo><macAddress>00:50:56:aa:00:01</macAddress><deviceConfigId>4002</deviceConfigId><ipAddress>198.51.100.1</ipAddress></GuestNicInfo>
            </val></propSet></objects></returnval></RetrievePropertiesExResponse>
            """)
        let machine = try #require(try VSphereSOAP.parseRetrieveResult(answer).objects.first)
        #expect(machine.cards?.map(\.key) == [4001, 4002, 4003], "the disk is no card; an unknown type with a MAC is")
        #expect(machine.cards?.map(\.network) == ["nsx-1", "", ""])
        #expect(machine.cards?.first?.macAddress == "00:50:56:aa:00:01", "MACs in lower case")
        let interfaces = VSphereMapping.interfaces(machine)
        // The NIC naming device 4002 goes to 4002, not to the card of its
        // MAC, which gets none; the one naming no device goes by its MAC.
        #expect(interfaces[0].addresses.isEmpty, "no NIC for 4001: its MAC's NIC names another card")
        #expect(interfaces[1].addresses.map(\.value) == ["198.51.100.1"])
        // Plain ipAddress entries (no ipConfig): addresses without a CIDR.
        #expect(interfaces[2].addresses.map(\.value) == ["192.0.2.10", "2001:db8::a"])
        #expect(interfaces[2].addresses.map(\.cidr) == ["", ""] && interfaces[2].cidr.isEmpty)
    }

    @Test func faultsAreReadWithTheirName() throws {
        let faults = try [
            "fault-invalid-login", "fault-no-permission", "fault-not-authenticated", "fault-managed-object-not-found", "fault-invalid-request",
        ].map { try VSphereSOAP.parseFault(try Self.captured($0)) }
        #expect(faults.map { $0?.name } == ["InvalidLogin", "NoPermission", "NotAuthenticated", "ManagedObjectNotFound", "InvalidRequest"])
        #expect(faults[0]?.message == "Login failure")
        #expect(faults[4]?.message == "no vmomi type defined for 'Frobnicate'")
        #expect(throws: VSphereAnswerError.fault(VSphereFault(name: "InvalidLogin", message: "Login failure"))) {
            try VSphereSOAP.parseRetrieveResult(try Self.captured("fault-invalid-login"))
        }
        #expect(try VSphereSOAP.parseFault(try Self.captured("retrieve-all-status")) == nil, "an answer is no fault")
        // Without an xsi:type, the detail's element name says it.
        let bare = Self.soap("<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>no</faultstring><detail><NoPermissionFault/></detail></soapenv:Fault>")
        #expect(try VSphereSOAP.parseFault(bare) == VSphereFault(name: "NoPermission", message: "no"))
    }

    @Test(arguments: [
        ("InvalidLogin", "Login", RPCStatusCode.unauthenticated), ("PasswordExpired", "Login", .unauthenticated),
        ("NotAuthenticated", "RetrievePropertiesEx", .unauthenticated), ("NoPermission", "Login", .permissionDenied),
        ("NoPermission", "CreateContainerView", .permissionDenied), ("ManagedObjectNotFound", "CreateContainerView", .failedPrecondition),
        ("InvalidRequest", "Frobnicate", .failedPrecondition), ("", "RetrievePropertiesEx", .failedPrecondition),
    ])
    func faultsMapToTheContract(name: String, method: String, expected: RPCStatusCode) {
        let error = VSphereClient.mapFault(VSphereFault(name: name, message: "said"), method: method, host: "vc:443", user: "poller")
        #expect(error.code == expected)
        #expect(error.message.hasPrefix("\(method): vCenter at vc:443 "))
        #expect(error.message.hasSuffix(name.isEmpty ? "said" : "\(name): said"))
    }

    @Test(arguments: [
        ("garbage", "the answer is not XML"),
        ("<html><body><h1>503 Service Unavailable</h1></body></html>", "the answer is not a SOAP envelope: it holds no Envelope element"),
        ("<html><body><h1>Envelope</h1></body></html>", "the answer is not a SOAP envelope: the root element is \"html\", not Envelope"),
        ("<Envelope", "the answer is not XML"),
        ("<!DOCTYPE html><html></html>", "the answer is not a SOAP envelope: it holds no Envelope element"),
        ("<!DOCTYPE Envelope><Envelope/>", "the answer has a document type or other declaration"),
        (#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Envelope>&a;</Envelope>"#, "the answer has a document type or other declaration"),
        (#"<?xml version="1.0" encoding="ISO-8859-1"?><Envelope/>"#, "the answer declares the encoding \"ISO-8859-1\", not UTF-8"),
        ("", "the answer is not XML"),
    ])
    func whatIsNotSOAPIsRefusedOnOneLine(body: String, expected: String) {
        #expect(throws: VSphereAnswerError.self) { try VSphereSOAP.parseRetrieveResult(Array(body.utf8)) }
        do {
            _ = try VSphereSOAP.parseRetrieveResult(Array(body.utf8))
        } catch {
            #expect(error.description == expected)
        }
    }

    /// Foundation's XMLParser traps on an element name that is not UTF-8
    /// (found by scripts/fuzz vsphere-soap): XMLTree, shared with the ec2
    /// backend, refuses such bytes before they reach it.
    @Test func bytesThatAreNotUTF8NeverReachTheXMLParser() throws {
        let trap = try #require(FileManager.default.contents(
            atPath: "\(BuiltProducts.repositoryRoot)/Fuzz/regressions/vsphere-soap/element-name-not-utf8-trapped-xmlparser"
        ))
        #expect(XMLTree.parse(trap) == nil)
        #expect(throws: VSphereAnswerError.notXML("is not UTF-8")) { try VSphereSOAP.parseRetrieveResult(Array(trap)) }
        #expect(XMLTree.parse(Data("<a><b".utf8) + Data([0xFF, 0xFE]) + Data("/></a>".utf8)) == nil)
        #expect(XMLTree.parse(Data("<a>\u{0}</a>".utf8)) == nil, "nor a NUL")
        #expect(XMLTree.parse(Data("<a>é ✓ 𝄞</a>".utf8))?.text == "é ✓ 𝄞", "UTF-8 beyond ASCII is read")
    }

    /// Foundation's XMLParser dereferences a null pointer on a processing
    /// instruction without data (found by scripts/fuzz vsphere-soap), and
    /// traps on element, attribute list and notation declarations: no
    /// processing instruction or document type reaches it; an XML
    /// declaration still does.
    @Test func processingInstructionsNeverReachTheXMLParser() throws {
        let trap = try #require(FileManager.default.contents(
            atPath: "\(BuiltProducts.repositoryRoot)/Fuzz/regressions/vsphere-soap/processing-instruction-without-data-crashed-xmlparser"
        ))
        #expect(XMLTree.parse(trap) == nil)
        for text in ["<?xm?><a/>", "<a><?pi?></a>", "<a><?pi data?></a>", #"<?xml version="1.0"?><?xml version="1.0"?><a/>"#, "<?xml?><a/>"] {
            #expect(XMLTree.parse(Data(text.utf8)) == nil, "\(text)")
        }
        // Declarations it traps on too.
        for text in ["<!DOCTYPE a [<!ELEMENT a ANY>]><a/>", "<!DOCTYPE a [<!NOTATION n SYSTEM \"x\">]><a/>", "<!DOCTYPE a [<!ENTITY e \"\">]><a>&e;</a>"] {
            #expect(XMLTree.parse(Data(text.utf8)) == nil, "\(text)")
        }
        for text in [#"<?xml version="1.0" encoding="UTF-8"?>"# + "\n<a/>", "\u{FEFF}<?xml version=\"1.0\"?><a/>", "<a/>"] {
            #expect(XMLTree.parse(Data(text.utf8))?.name == "a", "\(text.debugDescription)")
        }
    }

    /// Foundation's XMLParser on Linux says it parsed a document that is
    /// cut short: XMLTree, shared with the ec2 backend, refuses it, so a
    /// truncated page never reads as a page with fewer machines.
    @Test func anAnswerCutShortIsNotRead() throws {
        let page = try Self.captured("retrieve-all-status")
        for cut in [page.count - 1, page.count - 20, page.count / 2, 100] {
            #expect(XMLTree.parse(Data(page.prefix(cut))) == nil, "cut at \(cut) of \(page.count)")
            #expect(throws: VSphereAnswerError.notXML("is not XML")) { try VSphereSOAP.parseRetrieveResult(Array(page.prefix(cut))) }
        }
        #expect(XMLTree.parse(Data("<a><b></b>".utf8)) == nil)
        #expect(XMLTree.parse(Data("<a></a><b/>".utf8)) == nil, "nor more after the root element")
        #expect(XMLTree.parse(Data(page)) != nil)
    }

    @Test func malformedAnswersAreRefusedSayingWhat() throws {
        func refusal(_ body: String) -> String? {
            do {
                _ = try VSphereSOAP.parseRetrieveResult(Self.soap(body))
                return nil
            } catch {
                return error.description
            }
        }
        #expect(refusal(#"<LoginResponse xmlns="urn:vim25"/>"#) == "malformed answer: expected ContinueRetrievePropertiesExResponse or RetrievePropertiesExResponse, got \"LoginResponse\"")
        #expect(refusal(#"<RetrievePropertiesExResponse><returnval><objects><propSet><name>name</name></propSet></objects></returnval></RetrievePropertiesExResponse>"#)
            == "malformed answer: an object without one managed object reference")
        #expect(refusal(#"<RetrievePropertiesExResponse><returnval><objects><obj>vm-1</obj></objects></returnval></RetrievePropertiesExResponse>"#)
            == "malformed answer: an object without one managed object reference", "a reference needs its type")
        #expect(refusal("<RetrievePropertiesExResponse><returnval/><returnval/></RetrievePropertiesExResponse>")
            == "malformed answer: RetrievePropertiesExResponse holds 2 returnval elements")
        #expect(refusal("<RetrievePropertiesExResponse><returnval><token> </token></returnval></RetrievePropertiesExResponse>") == "malformed answer: an empty token")
        #expect(refusal("""
            <RetrievePropertiesExResponse><returnval><objects><obj type="VirtualMachine">vm-1</obj><propSet><name>config.hardware.device</name>
            <val><VirtualDevice xsi:type="VirtualVmxnet3"><macAddress>m</macAddress></VirtualDevice></val></propSet></objects></returnval></RetrievePropertiesExResponse>
            """) == "malformed answer: a network card of VirtualMachine:vm-1 without a device key")
        #expect(refusal("""
            <RetrievePropertiesExResponse><returnval><objects><obj type="VirtualMachine">vm-1</obj><propSet><name>config.hardware.device</name>
            <val><VirtualDevice xsi:type="VirtualVmxnet3"><key>1</key><connectable><connected>maybe&#10;so</connected></connectable></VirtualDevice></val></propSet></objects></returnval></RetrievePropertiesExResponse>
            """) == "malformed answer: connectable.connected of card 1 of VirtualMachine:vm-1 is \"maybe so\", not a boolean", "on one line")
        // A machine gone since it was looked up (reportMissingObjectsInResults).
        let gone = try? VSphereSOAP.parseRetrieveResult(Self.soap("""
            <RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-7</obj><missingSet><path></path>
            <fault><fault xsi:type="ManagedObjectNotFound"><obj type="VirtualMachine">vm-7</obj></fault><localizedMessage></localizedMessage></fault>
            </missingSet></objects></returnval></RetrievePropertiesExResponse>
            """))
        #expect(gone?.objects.map(\.gone) == [true])
        #expect(try VSphereSOAP.parseRetrieveResult(try Self.captured("retrieve-all-status")).objects.allSatisfy { !$0.gone })
        // vSphere's "nothing matched": no returnval at all.
        #expect(refusal(#"<RetrievePropertiesExResponse xmlns="urn:vim25"></RetrievePropertiesExResponse>"#) == nil)
    }

    // MARK: - Addresses, states, names

    @Test(arguments: [
        ("10.0.0.5", 24, "10.0.0.5", "10.0.0.0/24", ProviderV1.AddressScope.cloudLocal),
        ("172.31.255.1", 12, "172.31.255.1", "172.16.0.0/12", .cloudLocal), ("172.32.0.1", 16, "172.32.0.1", "172.32.0.0/16", .public),
        ("192.168.1.9", 32, "192.168.1.9", "192.168.1.9/32", .cloudLocal), ("100.64.3.4", 10, "100.64.3.4", "100.64.0.0/10", .cloudLocal),
        ("100.128.0.1", 9, "100.128.0.1", "100.128.0.0/9", .public), ("169.254.7.7", 16, "169.254.7.7", "169.254.0.0/16", .linkLocal),
        ("127.0.0.1", 8, "127.0.0.1", "127.0.0.0/8", .machineLocal), ("203.0.113.77", 0, "203.0.113.77", "0.0.0.0/0", .public),
        ("2001:DB8:0:0:1:0:0:1", 64, "2001:db8::1:0:0:1", "2001:db8::/64", .public), ("fe80::1%eth0", 64, "fe80::1", "fe80::/64", .linkLocal),
        ("febf::1", 10, "febf::1", "fe80::/10", .linkLocal), ("fec0::1", 10, "fec0::1", "fec0::/10", .public),
        ("::1", 128, "::1", "::1/128", .machineLocal), ("fd12:3456::9", 48, "fd12:3456::9", "fd12:3456::/48", .cloudLocal),
        ("2001:db8:0:1:0:0:0:5", 63, "2001:db8:0:1::5", "2001:db8::/63", .public), ("1:0:0:2:0:0:0:3", 127, "1:0:0:2::3", "1:0:0:2::2/127", .public),
        ("::ffff:192.0.2.1", 120, "::ffff:c000:201", "::ffff:c000:200/120", .public),
    ])
    func addressesGetTheirNetworkAndScope(value: String, prefix: Int, canonical: String, cidr: String, scope: ProviderV1.AddressScope) throws {
        let address = try #require(VSphereMapping.address(value, prefixLength: prefix))
        #expect(address.value == canonical)
        #expect(address.cidr == cidr)
        #expect(address.scope == scope)
        #expect(address.type == (canonical.contains(":") ? .ipv6 : .ipv4))
    }

    @Test func notAddressesAndBadPrefixes() {
        for text in ["", "web-1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "256.1.1.1", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "::1.2.3", "1.2.3.4/24", "fe80::g"] {
            #expect(VSphereMapping.address(text, prefixLength: 8) == nil, "\(text)")
        }
        #expect(VSphereMapping.address("10.1.2.3", prefixLength: 33)?.cidr == "", "no CIDR for a prefix out of range")
        #expect(VSphereMapping.address("10.1.2.3", prefixLength: nil)?.cidr == "", "nor without a prefix")
        #expect(VSphereMapping.address("::", prefixLength: 129)?.cidr == "")
    }

    @Test(arguments: [
        ("poweredOn", ProviderV1.InstanceState.running), ("poweredOff", .stopped), ("suspended", .stopped), ("", .unknown), ("rebooting", .unknown),
    ])
    func powerStatesAreNormalized(power: String, expected: ProviderV1.InstanceState) {
        #expect(VSphereMapping.state(powerState: power) == expected)
    }

    @Test func theStatusSaysTheGuestAndALostConnection() {
        var machine = VSphereVirtualMachine(ref: VSphereMoRef(type: "VirtualMachine", value: "vm-1"))
        machine.powerState = "poweredOn"
        machine.guestState = "running"
        machine.connectionState = "connected"
        #expect(VSphereMapping.status(machine) == .with { $0.state = .running; $0.rawStatus = "poweredOn"; $0.message = "guest running" })
        machine.connectionState = "orphaned"
        #expect(VSphereMapping.status(machine) == .with { $0.state = .unknown; $0.rawStatus = "poweredOn"; $0.message = "guest running; connection orphaned" })
        machine.guestState = nil
        machine.connectionState = nil
        #expect(VSphereMapping.status(machine) == .with { $0.state = .running; $0.rawStatus = "poweredOn" })
    }

    @Test func idsAreNamesOrInstanceUUIDs() {
        func machine(_ value: String, _ name: String, _ uuid: String, _ power: String) -> VSphereVirtualMachine {
            var machine = VSphereVirtualMachine(ref: VSphereMoRef(type: "VirtualMachine", value: value))
            machine.name = name
            machine.instanceUUID = uuid
            machine.powerState = power
            return machine
        }
        var ghost = machine("vm-8", "twin", "50000000-0000-0000-0000-000000000008", "poweredOn")
        ghost.gone = true
        let machines = [
            ghost,
            machine("vm-10", "twin", "50000000-0000-0000-0000-00000000000a", "poweredOff"),
            machine("vm-9", "twin", "50000000-0000-0000-0000-000000000009", "poweredOn"),
            machine("vm-11", "50000000-0000-0000-0000-000000000009", "50000000-0000-0000-0000-00000000000b", "suspended"),
        ]
        let ids = ["twin", "50000000-0000-0000-0000-00000000000A", "50000000-0000-0000-0000-000000000009", "Twin", "nope", ""]
        let answer = VSphereMapping.instances(ids: ids, machines: machines)
        #expect(answer.results.map(\.instanceID) == ids)
        #expect(answer.results.map(\.found) == [true, true, true, false, false, false], "names are case-sensitive")
        #expect(answer.results[0].status.rawStatus == "poweredOn", "of two twins, the oldest: vm-9 before vm-10 (vm-8 is gone)")
        #expect(answer.results[0].status.message == "one of 2 VMs named twin, reporting vm-9")
        #expect(answer.results[1].status.rawStatus == "poweredOff", "a UUID in any case")
        #expect(answer.results[2].status.rawStatus == "suspended", "a name wins over a UUID")
    }

    // MARK: - Endpoints and credentials

    @Test func endpointsAreHTTPSUnlessLoopback() throws {
        func url(_ endpoint: String) throws -> String { try VSphereEndpoint.of(.with { $0.endpoint = endpoint }).url }
        #expect(try url("vcenter.example.com") == "https://vcenter.example.com/sdk")
        #expect(try url("vcenter.example.com:8443") == "https://vcenter.example.com:8443/sdk")
        #expect(try url("https://vcenter.example.com") == "https://vcenter.example.com/sdk")
        #expect(try url("https://vcenter.example.com/sdk") == "https://vcenter.example.com/sdk")
        #expect(try url("http://127.0.0.1:8989/sdk") == "http://127.0.0.1:8989/sdk")
        #expect(try VSphereEndpoint.of(.with { $0.endpoint = "http://127.0.0.1:8989/sdk" }).host == "127.0.0.1:8989")
        #expect(throws: RPCError(.invalidArgument, "plain HTTP is allowed only for a loopback endpoint, not vc.example.com; use https")) {
            try VSphereEndpoint.of(.with { $0.endpoint = "http://vc.example.com/sdk" })
        }
        #expect(throws: RPCError(.invalidArgument, "the vsphere cloud spec needs an endpoint, e.g. https://vcenter.example.com/sdk")) {
            try VSphereEndpoint.of(.with { $0.region = "DC0" })
        }
        #expect(throws: RPCError(.invalidArgument, "the vsphere endpoint must not carry a user or password; they belong in the credential")) {
            try VSphereEndpoint.of(.with { $0.endpoint = "https://admin:hunter22@vc.example.com/sdk" })
        }
        #expect(throws: RPCError(.invalidArgument, "the vsphere endpoint must be https (or http on loopback), not ftp")) {
            try VSphereEndpoint.of(.with { $0.endpoint = "ftp://vc.example.com/sdk" })
        }
    }

    @Test func credentialsNeedAUserAndAPassword() throws {
        #expect(throws: RPCError(.unauthenticated, "credential c needs the attribute password")) {
            try VSphereBackend.credentials(.with { $0.name = "c"; $0.authType = "userpass"; $0.attributes = ["user": "u"] })
        }
        #expect(throws: RPCError(.unauthenticated, "credential c needs the attribute user")) {
            try VSphereBackend.credentials(.with { $0.name = "c"; $0.attributes = ["password": "secret-1"] })
        }
        #expect(throws: RPCError(.unauthenticated, "credential c has auth type access-key; the vsphere backend takes userpass")) {
            try VSphereBackend.credentials(.with { $0.name = "c"; $0.authType = "access-key"; $0.attributes = ["user": "u", "password": "p"] })
        }
        #expect(throws: RPCError(.unauthenticated, "credential c: the attribute password holds a control character, which SOAP cannot carry")) {
            try VSphereBackend.credentials(.with { $0.name = "c"; $0.attributes = ["user": "u", "password": "p\u{1}x"] })
        }
        let credentials = try VSphereBackend.credentials(.with { $0.name = "c"; $0.attributes = ["user": "u", "password": "very-secret"] })
        #expect(!"\(credentials)".contains("very-secret"))
        let endpoint = try VSphereEndpoint.of(.with { $0.endpoint = "vc" })
        let other = try VSphereEndpoint.of(.with { $0.endpoint = "vc2" })
        #expect(credentials.fingerprint(endpoint) != credentials.fingerprint(other), "a session per endpoint")
        #expect(credentials.fingerprint(endpoint).count == 64 && !credentials.fingerprint(endpoint).contains("very-secret"))
    }

    @Test func theScopeIsADatacenterAndAFolder() throws {
        let scope = try VSphereBackend.Scope.of(.with { $0.attributes = ["datacenter": "/Dept/DC0/", "folder": "apps/web/"] })
        #expect(scope.folderPath == "Dept/DC0/vm/apps/web")
        #expect(try VSphereBackend.Scope.of(.with { $0.region = "DC1" }).folderPath == "DC1/vm", "the region when the attribute is absent")
        #expect(throws: RPCError(.invalidArgument, "the vsphere cloud spec needs the attribute datacenter (or a region naming the datacenter), e.g. DC0")) {
            try VSphereBackend.Scope.of(.with { $0.attributes = ["folder": "apps"] })
        }
        #expect(throws: RPCError(.invalidArgument, "cloud attribute page-size must be a number from 1 to 10000, not \"0\"")) {
            try VSphereBackend.Scope.of(.with { $0.region = "DC0"; $0.attributes = ["page-size": "0"] })
        }
        #expect(throws: RPCError(.invalidArgument, "the vsphere cloud attribute folder \"a//b\" is not an inventory path such as DC0 or apps/web")) {
            try VSphereBackend.Scope.of(.with { $0.region = "DC0"; $0.attributes = ["folder": "a//b"] })
        }
    }

    @Test func theSessionCookieIsReadFromSetCookie() {
        #expect(VSphereClient.sessionCookie(#"vmware_soap_session="52a0c1"; Path=/; HttpOnly; Secure;"#) == #""52a0c1""#)
        #expect(VSphereClient.sessionCookie("vmware_soap_session=abc") == "abc")
        #expect(VSphereClient.sessionCookie("other=1; vmware_soap_session=abc") == nil, "not the cookie's name")
        #expect(VSphereClient.sessionCookie("vmware_soap_session=; Path=/") == nil)
    }

    // MARK: - Against a scripted vCenter

    static let content = """
        <RetrieveServiceContentResponse xmlns="urn:vim25"><returnval>
        <rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">propertyCollector</propertyCollector>
        <viewManager type="ViewManager">ViewManager</viewManager><about><apiType>VirtualCenter</apiType><apiVersion>8.0.2.0</apiVersion></about>
        <sessionManager type="SessionManager">SessionManager</sessionManager><searchIndex type="SearchIndex">SearchIndex</searchIndex>
        </returnval></RetrieveServiceContentResponse>
        """

    static func machine(_ value: String, _ name: String, _ power: String) -> String {
        """
        <objects><obj type="VirtualMachine">\(value)</obj><propSet><name>name</name><val xsi:type="xsd:string">\(name)</val></propSet>
        <propSet><name>runtime.powerState</name><val xsi:type="VirtualMachinePowerState">\(power)</val></propSet></objects>
        """
    }

    static func fault(_ name: String, _ message: String) -> StubVCenter.Answer {
        StubVCenter.Answer(status: 500, body: """
            <soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>\(message)</faultstring>\
            <detail><\(name)Fault xmlns="urn:vim25" xsi:type="\(name)"/></detail></soapenv:Fault>
            """)
    }

    /// The answers of a vCenter where everything works, pages of `pages`.
    static func working(pages: [String], continueAnswer: StubVCenter.Answer? = nil) -> @Sendable (StubVCenter.Request, Int) -> StubVCenter.Answer {
        /// Page `index`, with the token of the next if there is one; closes the answer.
        let page = { @Sendable (index: Int, method: String) -> String in
            (index + 1 < pages.count ? "<token>t\(index + 1)</token>" : "") + pages[index] + "</returnval></\(method)Response>"
        }
        return { request, nth in
            switch request.method {
            case "RetrieveServiceContent": StubVCenter.Answer(body: content)
            case "Login": StubVCenter.Answer(body: #"<LoginResponse xmlns="urn:vim25"><returnval><key>k</key></returnval></LoginResponse>"#,
                                             cookie: "\"session-\(nth)\"")
            case "FindByInventoryPath":
                StubVCenter.Answer(body: request.body.contains("<inventoryPath>DC0</inventoryPath>")
                    ? #"<FindByInventoryPathResponse xmlns="urn:vim25"><returnval type="Datacenter">datacenter-3</returnval></FindByInventoryPathResponse>"#
                    : #"<FindByInventoryPathResponse xmlns="urn:vim25"><returnval type="Folder">group-v4</returnval></FindByInventoryPathResponse>"#)
            case "CreateContainerView":
                StubVCenter.Answer(body: #"<CreateContainerViewResponse xmlns="urn:vim25"><returnval type="ContainerView">session[1]view-\#(nth)</returnval></CreateContainerViewResponse>"#)
            case "RetrievePropertiesEx":
                StubVCenter.Answer(body: "<RetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval>" + page(0, "RetrievePropertiesEx"))
            case "ContinueRetrievePropertiesEx":
                if let continueAnswer { continueAnswer } else {
                    // Token tN stands for page N.
                    StubVCenter.Answer(body: "<ContinueRetrievePropertiesExResponse xmlns=\"urn:vim25\"><returnval>"
                        + page(Int(request.body.split(separator: "<token>t").last?.prefix { $0.isNumber } ?? "") ?? 0, "ContinueRetrievePropertiesEx"))
                }
            default:
                StubVCenter.Answer(body: "<\(request.method)Response xmlns=\"urn:vim25\"></\(request.method)Response>")
            }
        }
    }

    static func cloud(_ stub: StubVCenter) -> ProviderV1.CloudSpec {
        .with { $0.endpoint = stub.endpoint; $0.attributes = ["datacenter": "DC0", "page-size": "2"] }
    }
    static let credential = ProviderV1.Credential.with { $0.name = "main"; $0.authType = "userpass"; $0.attributes = ["user": "poller", "password": "pass-word-1"] }

    /// The backend on a fresh client talking to `stub`.
    static func withBackend(maxAttempts: Int = 3, _ body: (VSphereBackend) async throws -> Void) async throws {
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let http = CloudHTTPClient(proxies: .direct, logger: logger)
        var settings = VSphereClient.Settings()
        settings.maxAttempts = maxAttempts
        settings.retryBase = .milliseconds(10)
        // Clean-up requests get a bound that only a test gone wrong uses up
        // (the default 5 s, shared by three attempts, a loaded CI machine can).
        settings.cleanupTimeout = .seconds(60)
        let backend = VSphereBackend(client: VSphereClient(http: http, settings: settings, logger: logger), logger: logger)
        do {
            try await body(backend)
        } catch {
            try await http.shutdown()
            throw error
        }
        try await http.shutdown()
    }

    /// A call's context. The deadline is generous: it only bounds a test
    /// gone wrong, and each attempt gets a share of it, which a loaded CI
    /// machine (the whole suite at once on two cores) can use up.
    static func context(_ timeout: Duration = .seconds(120)) -> RPCServerContext {
        RPCServerContext(service: ProviderV1.serviceName, method: "Instances", deadline: .now + timeout)
    }

    @Test func everyPageIsFollowedAndTheViewDestroyed() async throws {
        let pages = [Self.machine("vm-1", "a", "poweredOn") + Self.machine("vm-2", "b", "poweredOff"),
                     Self.machine("vm-3", "c", "suspended") + Self.machine("vm-4", "d", "poweredOn"),
                     Self.machine("vm-5", "e", "poweredOn")]
        let stub = try await StubVCenter.start(Self.working(pages: pages))
        defer { stub.close() }
        try await Self.withBackend { backend in
            let ids = ["e", "a", "zz", "c"]
            let answer = try await backend.instances(.with { $0.cloud = Self.cloud(stub); $0.credential = Self.credential; $0.instanceIds = ids }, context: Self.context())
            #expect(answer.results.map(\.instanceID) == ids)
            #expect(answer.results.map(\.found) == [true, true, false, true], "objects of the first, second and last page")
            #expect(answer.results.map(\.status.state) == [.running, .running, .unspecified, .stopped])
        }
        let requests = stub.requests
        // The scope's inventory through a view, then the matched machines
        // by reference (the stub answers every retrieval with its pages).
        try #require(requests.map(\.method) == [
            "RetrieveServiceContent", "Login", "FindByInventoryPath", "FindByInventoryPath", "CreateContainerView",
            "RetrievePropertiesEx", "ContinueRetrievePropertiesEx", "ContinueRetrievePropertiesEx", "DestroyView",
            "RetrievePropertiesEx", "ContinueRetrievePropertiesEx", "ContinueRetrievePropertiesEx",
        ])
        #expect(requests.map(\.soapAction).allSatisfy { $0 == "urn:vim25/6.5" })
        #expect(requests.dropFirst(2).allSatisfy { $0.cookie == "vmware_soap_session=\"session-0\"" }, "the session's cookie on every call after Login")
        #expect(requests[0].cookie == nil && requests[1].cookie == nil)
        #expect(requests[1].body.contains("<userName>poller</userName><password>pass-word-1</password>"))
        #expect(requests[5].body.contains("<maxObjects>2</maxObjects>"))
        #expect(requests[6].body.contains("<token>t1</token>") && requests[7].body.contains("<token>t2</token>"))
        #expect(requests[8].body.contains(#"<_this type="ContainerView">session[1]view-0</_this>"#))
        let inventoryRead = requests[5].body, byReference = requests[9].body
        #expect(inventoryRead.contains("<pathSet>name</pathSet>") && !inventoryRead.contains("runtime.powerState"), "the inventory: names and UUIDs only")
        #expect(byReference.contains("runtime.powerState") && !byReference.contains("ContainerView"))
        let asked = byReference.matches(of: #/<obj type="VirtualMachine">(vm-\d+)</obj>/#).map { String($0.1) }
        #expect(asked == ["vm-1", "vm-3", "vm-5"], "the machines of a, c and e, in order; zz names none")
    }

    /// A kept inventory is used while younger than its TTL, per endpoint,
    /// user and folder; at most `maxEntries` scopes, the oldest read going
    /// first; a TTL of zero keeps nothing.
    @Test func keptInventoriesAgeOutAndAreBounded() {
        let inventory = VSphereMapping.Inventory([{ var vm = VSphereVirtualMachine(ref: VSphereMoRef(type: "VirtualMachine", value: "vm-1")); vm.name = "a"; return vm }()])
        let cache = VSphereInventoryCache(maxAge: .seconds(60), maxEntries: 3)
        let start = ContinuousClock.now
        cache.store("s0", inventory, readAt: start)
        #expect(cache.inventory("s0", now: start + .seconds(59))?.match("a")?.machine.ref.value == "vm-1")
        #expect(cache.inventory("s0", now: start + .seconds(60)) == nil, "as old as the TTL: read anew")
        #expect(cache.count == 0, "an aged entry is dropped")
        for n in 1...4 { cache.store("s\(n)", inventory, readAt: start + .seconds(Int64(n))) }
        #expect(cache.count == 3)
        #expect(cache.inventory("s1", now: start + .seconds(5)) == nil, "the oldest read went first")
        #expect(cache.inventory("s4", now: start + .seconds(5)) != nil)

        let off = VSphereInventoryCache(maxAge: .zero)
        off.store("s", inventory, readAt: .now)
        #expect(off.count == 0 && off.inventory("s") == nil)

        let endpoint = try! VSphereEndpoint.of(.with { $0.endpoint = "https://vc.example.com/sdk" })
        let target = { (user: String) in
            VSphereClient.Target(endpoint: endpoint, credentials: VSphereCredentials(name: "c", user: user, password: "Secret-Pass-9"), deadline: .now)
        }
        #expect(VSphereInventoryCache.key(target("a"), folderPath: "DC0/vm") != VSphereInventoryCache.key(target("b"), folderPath: "DC0/vm"), "per user")
        #expect(VSphereInventoryCache.key(target("a"), folderPath: "DC0/vm") != VSphereInventoryCache.key(target("a"), folderPath: "DC0/vm/apps"), "per folder")
        #expect(!VSphereInventoryCache.key(target("a"), folderPath: "DC0/vm").contains("Secret-Pass-9"), "no password in the key")
    }

    @Test func aFailedPageCancelsTheRetrievalAndStillDestroysTheView() async throws {
        let pages = [Self.machine("vm-1", "a", "poweredOn"), Self.machine("vm-2", "b", "poweredOn")]
        let stub = try await StubVCenter.start(Self.working(pages: pages, continueAnswer: Self.fault("InvalidArgument", "A specified parameter was not correct: token")))
        defer { stub.close() }
        try await Self.withBackend { backend in
            let error = await rpcError {
                _ = try await backend.instances(.with { $0.cloud = Self.cloud(stub); $0.credential = Self.credential; $0.instanceIds = ["a"] }, context: Self.context())
            }
            #expect(error?.code == .failedPrecondition)
            #expect(error?.message == "ContinueRetrievePropertiesEx: vCenter at 127.0.0.1:\(stub.port) answered fault InvalidArgument: A specified parameter was not correct: token")
        }
        #expect(stub.requests.map(\.method).suffix(3) == ["ContinueRetrievePropertiesEx", "CancelRetrievePropertiesEx", "DestroyView"])
    }

    @Test func aSessionThatStaysUnauthenticatedIsUnauthenticated() async throws {
        let working = Self.working(pages: [Self.machine("vm-1", "a", "poweredOn")])
        let stub = try await StubVCenter.start { request, nth in
            request.method == "FindByInventoryPath" ? Self.fault("NotAuthenticated", "The session is not authenticated.") : working(request, nth)
        }
        defer { stub.close() }
        try await Self.withBackend { backend in
            let error = await rpcError {
                _ = try await backend.instances(.with { $0.cloud = Self.cloud(stub); $0.credential = Self.credential; $0.instanceIds = ["a"] }, context: Self.context())
            }
            #expect(error?.code == .unauthenticated)
            #expect(error?.message == "FindByInventoryPath: vCenter at 127.0.0.1:\(stub.port) does not take the session of a fresh login: NotAuthenticated: The session is not authenticated.")
        }
        try #require(stub.requests.map(\.method) == ["RetrieveServiceContent", "Login", "FindByInventoryPath", "Login", "FindByInventoryPath"], "one fresh login, once")
        #expect(stub.requests[4].cookie == "vmware_soap_session=\"session-1\"", "the new session")
    }

    @Test func loginsAreCoalescedAndValidationIsCached() async throws {
        let stub = try await StubVCenter.start(Self.working(pages: [Self.machine("vm-1", "a", "poweredOn")]))
        defer { stub.close() }
        try await Self.withBackend { backend in
            let request = ProviderV1.InstancesRequest.with { $0.cloud = Self.cloud(stub); $0.credential = Self.credential; $0.instanceIds = ["a"] }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        let answer = try await backend.instances(request, context: Self.context())
                        #expect(answer.results.first?.found == true)
                    }
                }
                try await group.waitForAll()
            }
            let validate = ProviderV1.ValidateCredentialRequest.with { $0.cloud = Self.cloud(stub); $0.credential = Self.credential }
            let first = try await backend.validateCredential(validate, context: Self.context())
            #expect(first.valid && !first.cached)
            #expect(try await backend.validateCredential(validate, context: Self.context()).cached)
        }
        let methods = stub.requests.map(\.method)
        #expect(methods.filter { $0 == "Login" }.count == 2, "one login for eight concurrent calls, one for the validation")
        #expect(methods.filter { $0 == "Logout" }.count == 1, "the validation's session ended: the credential had one")
        // Every view made is destroyed. A DestroyView may be sent twice: its
        // attempts share a short clean-up bound, and on a loaded machine an
        // attempt can time out after the stub has answered it.
        let created = methods.filter { $0 == "CreateContainerView" }.count
        let destroyed = Set(stub.requests.filter { $0.method == "DestroyView" }.compactMap { request in
            request.body.firstMatch(of: #/<_this type="ContainerView">([^<]+)</_this>/#).map { String($0.1) }
        })
        // Calls that started before the first inventory was kept read their
        // own; at least one, at most one each.
        #expect((1...8).contains(created))
        #expect(destroyed == Set((0..<created).map { "session[1]view-\($0)" }))
    }

    @Test func unreadableAnswersAndServerErrors() async throws {
        let attempts = NIOLockedValueBox(0)
        let stub = try await StubVCenter.start { request, _ in
            switch request.method {
            case "RetrieveServiceContent":
                // Two 503s from a proxy, then the answer: retried.
                attempts.withLockedValue { $0 += 1; return $0 } <= 2
                    ? StubVCenter.Answer(status: 503, raw: "<html><body>Service Unavailable</body></html>")
                    : StubVCenter.Answer(body: Self.content)
            case "Login": StubVCenter.Answer(status: 200, raw: "<html>captive portal</html>")
            default: StubVCenter.Answer(status: 404, raw: "not here")
            }
        }
        defer { stub.close() }
        try await Self.withBackend { backend in
            let error = await rpcError {
                _ = try await backend.instances(.with { $0.cloud = Self.cloud(stub); $0.credential = Self.credential; $0.instanceIds = ["a"] }, context: Self.context())
            }
            #expect(error?.code == .unavailable)
            #expect(error?.message == "Login: vCenter at 127.0.0.1:\(stub.port) answered HTTP 200 that cannot be read (the answer is not a SOAP envelope: it holds no Envelope element)")
        }
        #expect(stub.requests.map(\.method) == ["RetrieveServiceContent", "RetrieveServiceContent", "RetrieveServiceContent", "Login"])

        let lost = try await StubVCenter.start { _, _ in StubVCenter.Answer(status: 404, raw: "<html>Not Found</html>") }
        defer { lost.close() }
        try await Self.withBackend { backend in
            let error = await rpcError {
                _ = try await backend.instances(.with { $0.cloud = Self.cloud(lost); $0.credential = Self.credential; $0.instanceIds = ["a"] }, context: Self.context())
            }
            #expect(error?.code == .failedPrecondition)
            #expect(error?.message == "RetrieveServiceContent: 127.0.0.1:\(lost.port) answered HTTP 404, not SOAP; is the endpoint vCenter's SDK, e.g. https://vcenter.example.com/sdk?")
        }

        let busy = try await StubVCenter.start { _, _ in StubVCenter.Answer(status: 429, raw: "slow down") }
        defer { busy.close() }
        try await Self.withBackend { backend in
            let error = await rpcError {
                _ = try await backend.instances(.with { $0.cloud = Self.cloud(busy); $0.credential = Self.credential; $0.instanceIds = ["a"] }, context: Self.context())
            }
            #expect(error?.code == .resourceExhausted)
            #expect(error?.retryAfter == .seconds(2))
        }

        let down = try await StubVCenter.start { _, _ in StubVCenter.Answer(status: 502, raw: "bad gateway") }
        defer { down.close() }
        try await Self.withBackend(maxAttempts: 2) { backend in
            let error = await rpcError {
                _ = try await backend.instances(.with { $0.cloud = Self.cloud(down); $0.credential = Self.credential; $0.instanceIds = ["a"] }, context: Self.context())
            }
            #expect(error?.code == .unavailable)
            #expect(error?.message == "RetrieveServiceContent: vCenter at 127.0.0.1:\(down.port) is unavailable (HTTP 502)")
        }
        #expect(down.requests.count == 2, "--max-attempts")
    }

    @Test func anExpiredCredentialIsRefusedWithoutACall() async throws {
        let stub = try await StubVCenter.start { _, _ in StubVCenter.Answer(body: Self.content) }
        defer { stub.close() }
        var expired = Self.credential
        expired.expiresAtUnixNano = Int64((Date().timeIntervalSince1970 - 60) * 1e9)
        try await Self.withBackend { backend in
            let verdict = try await backend.validateCredential(.with { $0.cloud = Self.cloud(stub); $0.credential = expired }, context: Self.context())
            #expect(!verdict.valid && verdict.reason == "credential main has expired")
            let error = await rpcError {
                _ = try await backend.instances(.with { $0.cloud = Self.cloud(stub); $0.credential = expired; $0.instanceIds = ["a"] }, context: Self.context())
            }
            #expect(error == RPCError(.unauthenticated, "credential main has expired"))
        }
        #expect(stub.requests.isEmpty, "not one request")
    }

    @Test func aPasswordEchoedByTheServerIsScrubbed() async throws {
        let stub = try await StubVCenter.start { request, _ in
            request.method == "Login" ? Self.fault("InvalidLogin", "no user poller with password pass-word-1") : StubVCenter.Answer(body: Self.content)
        }
        defer { stub.close() }
        try await Self.withBackend { backend in
            let verdict = try await backend.validateCredential(.with { $0.cloud = Self.cloud(stub); $0.credential = Self.credential }, context: Self.context())
            #expect(!verdict.valid)
            #expect(verdict.reason == "Login: vCenter at 127.0.0.1:\(stub.port) refused user poller: InvalidLogin: no user poller with password [secret]")
        }
    }
}

/// A scripted vCenter on 127.0.0.1: answers each SOAP request with what
/// `script` says for it (and how many of its method came before), and
/// records every request.
final class StubVCenter: Sendable {
    struct Request: Sendable {
        var method: String
        var cookie: String?
        var soapAction: String?
        var body: String
    }

    struct Answer: Sendable {
        var status: Int
        var text: String
        var cookie: String?

        /// A SOAP envelope around `body`.
        init(status: Int = 200, body: String, cookie: String? = nil) {
            self.status = status
            text = String(decoding: VSphereUnitTests.soap(body), as: UTF8.self)
            self.cookie = cookie
        }

        /// `raw` as it is.
        init(status: Int, raw: String) {
            self.status = status
            text = raw
        }
    }

    private let recorded = NIOLockedValueBox<[Request]>([])
    private let script: @Sendable (Request, Int) -> Answer
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)
    private let boundPort = NIOLockedValueBox(0)

    var requests: [Request] { recorded.withLockedValue { $0 } }
    var port: Int { boundPort.withLockedValue { $0 } }
    var endpoint: String { "http://127.0.0.1:\(port)/sdk" }

    private init(script: @escaping @Sendable (Request, Int) -> Answer) {
        self.script = script
    }

    static func start(_ script: @escaping @Sendable (Request, Int) -> Answer) async throws -> StubVCenter {
        let stub = StubVCenter(script: script)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(stub: stub))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        stub.channel.withLockedValue { $0 = channel }
        stub.boundPort.withLockedValue { $0 = channel.localAddress?.port ?? 0 }
        return stub
    }

    func close() {
        channel.withLockedValue { $0 }?.close(promise: nil)
    }

    fileprivate func answer(_ head: HTTPRequestHead, _ body: String) -> Answer {
        var method = "?"
        if let start = body.range(of: "<soapenv:Body><") {
            method = String(body[start.upperBound...].prefix { $0.isLetter || $0.isNumber || $0 == "_" })
        }
        let request = Request(method: method, cookie: head.headers["Cookie"].first, soapAction: head.headers["SOAPAction"].first, body: body)
        let nth = recorded.withLockedValue { requests in
            defer { requests.append(request) }
            return requests.filter { $0.method == method }.count
        }
        return script(request, nth)
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let stub: StubVCenter
        var head: HTTPRequestHead?
        var body = ""

        init(stub: StubVCenter) { self.stub = stub }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body = ""
            case .body(let buffer):
                body += String(buffer: buffer)
            case .end:
                guard let head else { return }
                let answer = stub.answer(head, body)
                var headers = HTTPHeaders([("Content-Type", "text/xml; charset=utf-8"), ("Content-Length", "\(answer.text.utf8.count)")])
                if let cookie = answer.cookie { headers.add(name: "Set-Cookie", value: "vmware_soap_session=\(cookie); Path=/; HttpOnly; Secure;") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: HTTPResponseStatus(statusCode: answer.status), headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: answer.text)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
