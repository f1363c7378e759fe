public import Core
internal import Foundation
internal import SwiftProtobuf

/// An IPv4 or IPv6 address, parsed from text and written back canonically
/// (IPv6 in lower case without leading zeros, the longest run of two or
/// more zero groups, the first of equals, as "::").
public struct VSphereIPAddress: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes (IPv4) or 16 (IPv6), network order.
    public let bytes: [UInt8]

    public var isIPv4: Bool { bytes.count == 4 }
    public var bitCount: Int { bytes.count * 8 }

    /// Parses dotted IPv4 or IPv6 text (a zone such as `%eth0` is dropped);
    /// nil when `text` is neither.
    public init?(_ text: String) {
        var text = Substring(text)
        if let percent = text.firstIndex(of: "%") { text = text[..<percent] }
        if let v4 = Self.parseIPv4(text) {
            bytes = v4
        } else if let v6 = Self.parseIPv6(text) {
            bytes = v6
        } else {
            return nil
        }
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private static func parseIPv4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  part.count == 1 || part.first != "0", let value = UInt8(part)
            else { return nil }
            bytes.append(value)
        }
        return bytes
    }

    private static func parseIPv6(_ text: Substring) -> [UInt8]? {
        guard text.count >= 2, text.count <= 45 else { return nil }
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var compressed = false
        let halves = text.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        compressed = halves.count == 2
        func groups(_ part: String, allowIPv4: Bool) -> [UInt16]? {
            guard !part.isEmpty else { return [] }
            var out: [UInt16] = []
            let fields = part.split(separator: ":", omittingEmptySubsequences: false)
            for (index, field) in fields.enumerated() {
                if allowIPv4, index == fields.count - 1, field.contains(".") {
                    guard let v4 = parseIPv4(field) else { return nil }
                    out.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                    out.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                    continue
                }
                guard (1...4).contains(field.count), field.allSatisfy(\.isHexDigit), field.allSatisfy(\.isASCII),
                      let value = UInt16(field, radix: 16)
                else { return nil }
                out.append(value)
            }
            return out
        }
        if compressed {
            guard let first = groups(halves[0], allowIPv4: false), let second = groups(halves[1], allowIPv4: true) else { return nil }
            head = first
            tail = second
            guard head.count + tail.count <= 7 else { return nil }
        } else {
            guard let all = groups(halves[0], allowIPv4: true), all.count == 8 else { return nil }
            head = all
        }
        let words = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        return words.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }

    /// The first `prefixLength` bits, the rest zero.
    public func masked(_ prefixLength: Int) -> VSphereIPAddress {
        var out = bytes
        for index in out.indices {
            let bitsHere = max(0, min(8, prefixLength - index * 8))
            out[index] &= bitsHere == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - bitsHere))
        }
        return VSphereIPAddress(bytes: out)
    }

    public var description: String {
        if isIPv4 { return bytes.map(String.init).joined(separator: ".") }
        let words = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        // The longest run of two or more zero groups, the first on a tie.
        var best: Range<Int>?
        var start: Int?
        for index in 0...8 {
            if index < 8, words[index] == 0 {
                if start == nil { start = index }
            } else if let run = start {
                if index - run >= 2, index - run > (best?.count ?? 0) { best = run..<index }
                start = nil
            }
        }
        func hex(_ range: Range<Int>) -> String { range.map { String(words[$0], radix: 16) }.joined(separator: ":") }
        guard let best else { return hex(0..<8) }
        return hex(0..<best.lowerBound) + "::" + hex(best.upperBound..<8)
    }

    /// The contract's scope: link-local (169.254/16, fe80::/10), machine-local
    /// (loopback), cloud-local (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7), else public.
    public var scope: ProviderV1.AddressScope {
        if isIPv4 {
            switch (bytes[0], bytes[1]) {
            case (169, 254): return .linkLocal
            case (127, _): return .machineLocal
            case (10, _), (172, 16...31), (192, 168), (100, 64...127): return .cloudLocal
            default: return .public
            }
        }
        if bytes[0] == 0xFE, bytes[1] & 0xC0 == 0x80 { return .linkLocal }
        if bytes == Array(repeating: 0, count: 15) + [1] { return .machineLocal }
        if bytes[0] & 0xFE == 0xFC { return .cloudLocal }
        return .public
    }
}

/// What the backend makes of vSphere's answers (docs/DESIGN.md §7.3):
/// states, interfaces and addresses, and which machine an id names.
public enum VSphereMapping {
    /// poweredOn → running; poweredOff, suspended → stopped; else unknown.
    public static func state(powerState: String) -> ProviderV1.InstanceState {
        switch powerState {
        case "poweredOn": .running
        case "poweredOff", "suspended": .stopped
        default: .unknown
        }
    }

    /// The status of `vm`: the normalized power state (unknown while its
    /// host's connection is not `connected`: the power state is stale
    /// then), the power state as raw status, and the guest's state (and
    /// the connection, when not connected) as message.
    public static func status(_ vm: VSphereVirtualMachine) -> ProviderV1.InstanceStatus {
        let power = vm.powerState ?? ""
        var state = state(powerState: power)
        var notes: [String] = []
        if let guest = vm.guestState, !guest.isEmpty { notes.append("guest \(guest)") }
        if let connection = vm.connectionState, !connection.isEmpty, connection != "connected" {
            state = .unknown
            notes.append("connection \(connection)")
        }
        return .with {
            $0.state = state
            $0.rawStatus = power
            $0.message = VSphereSOAP.oneLine(notes.joined(separator: "; "))
        }
    }

    /// One address as the contract has it, or nil when `value` is not an
    /// IP address. The CIDR is the network of `prefixLength` bits (empty
    /// when the guest gave no prefix, or one out of range).
    public static func address(_ value: String, prefixLength: Int?) -> ProviderV1.Address? {
        guard let ip = VSphereIPAddress(value) else { return nil }
        return .with {
            $0.value = ip.description
            $0.type = ip.isIPv4 ? .ipv4 : .ipv6
            $0.scope = ip.scope
            if let prefixLength, (0...ip.bitCount).contains(prefixLength) {
                $0.cidr = "\(ip.masked(prefixLength))/\(prefixLength)"
            }
        }
    }

    /// The interfaces of `vm`: its Ethernet cards in device order, each
    /// joined with the guest NIC of its device key (else of its MAC, when
    /// that NIC names no other card) for the addresses. A card the guest
    /// does not report has none; the first card is primary; a card not
    /// connected is disabled.
    public static func interfaces(_ vm: VSphereVirtualMachine) -> [ProviderV1.NetworkInterface] {
        let cards = vm.cards ?? []
        let nics = vm.guestNICs ?? []
        let keys = Set(cards.map(\.key))
        return cards.enumerated().map { index, card in
            let nic = nics.first { $0.deviceConfigID == card.key }
                ?? nics.first { nic in
                    !card.macAddress.isEmpty && nic.macAddress == card.macAddress
                        && (nic.deviceConfigID.map { !keys.contains($0) } ?? true)
                }
            var addresses: [ProviderV1.Address] = []
            var seen: Set<String> = []
            for guestIP in nic?.addresses ?? [] {
                guard let address = address(guestIP.address, prefixLength: guestIP.prefixLength),
                      seen.insert(address.value).inserted
                else { continue }
                addresses.append(address)
            }
            return .with {
                $0.deviceIndex = Int32(index)
                $0.macAddress = card.macAddress
                $0.providerID = "\(card.key)"
                $0.providerNetworkID = card.network
                $0.cidr = (addresses.first { $0.type == .ipv4 && !$0.cidr.isEmpty } ?? addresses.first { !$0.cidr.isEmpty })?.cidr ?? ""
                $0.addresses = addresses
                $0.primary = index == 0
                $0.disabled = card.connected == false
            }
        }
    }

    /// Which machine an instance id names among `machines` (one retrieve
    /// result, the scope's machines).
    public struct Inventory: Sendable {
        /// The machine an id names, and how many machines bear its name.
        public struct Match: Sendable {
            public var machine: VSphereVirtualMachine
            public var sameName: Int
        }

        private var byName: [String: [VSphereVirtualMachine]] = [:]
        private var byUUID: [String: VSphereVirtualMachine] = [:]

        public init(_ machines: [VSphereVirtualMachine]) {
            for machine in machines where !machine.gone {
                if let name = machine.name { byName[name, default: []].append(machine) }
                if let uuid = machine.instanceUUID?.lowercased(), !uuid.isEmpty, byUUID[uuid] == nil { byUUID[uuid] = machine }
            }
        }

        /// The machine `id` names: by name (vSphere names are case-sensitive),
        /// else by instance UUID when `id` is one. Of several machines with
        /// one name, the one whose reference comes first
        /// (``VSphereMoRef/precedes(_:_:)``: the oldest), so that every poll
        /// reports the same machine.
        public func match(_ id: String) -> Match? {
            if let named = byName[id], let first = named.min(by: { VSphereMoRef.precedes($0.ref, $1.ref) }) {
                return Match(machine: first, sameName: named.count)
            }
            if Self.isUUID(id), let machine = byUUID[id.lowercased()] {
                return Match(machine: machine, sameName: 1)
            }
            return nil
        }

        /// Whether `machine` answers to `id`: bears it as its name, or as
        /// its instance UUID.
        public static func bears(_ machine: VSphereVirtualMachine, _ id: String) -> Bool {
            if machine.name == id { return true }
            return isUUID(id) && machine.instanceUUID?.lowercased() == id.lowercased()
        }

        /// 8-4-4-4-12 hexadecimal digits.
        public static func isUUID(_ text: String) -> Bool {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            return parts.map(\.count) == [8, 4, 4, 4, 12] && parts.allSatisfy { $0.allSatisfy { $0.isASCII && $0.isHexDigit } }
        }
    }

    /// The Instances answer for `ids` from one retrieve of the scope's
    /// machines, index-aligned. An id naming no machine is not found. An
    /// id naming several: see ``Inventory/match(_:)``; the message says so.
    public static func instances(ids: [String], machines: [VSphereVirtualMachine]) -> ProviderV1.InstancesResponse {
        let inventory = Inventory(machines)
        return instances(ids: ids, matched: inventory.match)
    }

    /// The Instances answer for `ids`, index-aligned, from the machine each
    /// id names (nil: not found).
    public static func instances(ids: [String], matched: (String) -> Inventory.Match?) -> ProviderV1.InstancesResponse {
        .with {
            $0.results = ids.map { id in
                .with {
                    $0.instanceID = id
                    guard let match = matched(id) else { return }
                    $0.found = true
                    $0.status = status(match.machine)
                    if match.sameName > 1 {
                        let note = "one of \(match.sameName) VMs named \(id), reporting \(match.machine.ref.value)"
                        $0.status.message = VSphereSOAP.oneLine($0.status.message.isEmpty ? note : "\($0.status.message); \(note)")
                    }
                }
            }
        }
    }
}
