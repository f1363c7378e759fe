import Controller
import Support
import ControlAPI
import Core
import Foundation
import Logging
import SwiftProtobuf
import Testing
import TestSupport

/// `provider-shim vsphere` against govmomi's vCenter simulator: first the
/// shim alone through the provider contract, then the real controller
/// polling it. One simulator serves the suite, so the tests run one at a
/// time (the request counts must be each test's alone).
@Suite("vSphere backend against govmomi's simulator", .serialized)
struct VSphereTests {
    static let vcsim = Task<VCSim, any Error> { try await VCSim.start() }

    static func cloud(_ sim: VCSim, folder: String? = nil, pageSize: Int = 2) -> ProviderV1.CloudSpec {
        .with {
            $0.type = "vsphere"
            $0.name = "vcsim"
            $0.endpoint = sim.truth.url
            $0.attributes = ["datacenter": sim.truth.datacenter, "page-size": "\(pageSize)"]
            if let folder { $0.attributes["folder"] = folder }
        }
    }

    static func credential(user: String, password: String) -> ProviderV1.Credential {
        .with {
            $0.name = "main"
            $0.authType = "userpass"
            $0.attributes = ["user": user, "password": password]
        }
    }

    static let secretMarker = "WRONG-password-value"

    /// `provider-shim vsphere` as a process under the shim contract (at
    /// debug level, so that every log line is checked for secrets), and a
    /// client.
    /// Returns the shim's log (stderr).
    @discardableResult
    static func withShim(
        _ sim: VCSim, arguments: [String] = [], environment: [String: String] = [:], _ body: (ProviderClient) async throws -> Void
    ) async throws -> String {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        chmod(directory.path, 0o700)
        let socket = directory.file("vsphere.sock")
        let shim = try await ChildProcess.spawn(
            BuiltProducts.path(of: "provider-shim"), ["vsphere", "--credential-ttl", "300", "--log-level", "debug"] + arguments,
            environment: environment.merging(["INSTANCEPOLLER_SOCKET": socket]) { _, contract in contract }
        )
        let line = try await shim.nextLine()
        #expect(line == "instancepoller-shim|1|unix|\(socket)|ttrpc")
        let client = try await ProviderClient.connect(socketPath: socket, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        let hello = try await client.handshake(controllerVersion: "test", timeout: .seconds(10))
        #expect(hello.shimName == "vsphere")
        #expect(hello.cloudTypes == ["vsphere"])
        #expect(hello.capabilities.maxBatchSize == 200 && hello.capabilities.credentialCache)
        do {
            try await body(client)
        } catch {
            shim.kill()
            throw error
        }
        await client.connection.close()
        shim.closeStdin()
        #expect(try await shim.waitForExit() == 0)
        let log = try await shim.output().stderr
        #expect(!log.isEmpty, "the shim logs at debug level")
        for secret in [secretMarker, sim.truth.password, sim.truth.noperm_password, "vmware_soap_session"] {
            #expect(!log.contains(secret), "a secret reached the shim's log")
        }
        return log
    }

    /// An interface as the fixture's truth says it, for comparing.
    struct Seen: Equatable, CustomStringConvertible {
        var index: Int32
        var key: String
        var mac: String
        var network: String
        var cidr: String
        var primary: Bool
        var disabled: Bool
        var addresses: [String]

        var description: String { "#\(index) key \(key) \(mac) \(network) \(cidr) primary \(primary) disabled \(disabled) \(addresses)" }
    }

    static func seen(_ interfaces: [ProviderV1.NetworkInterface]) -> [Seen] {
        interfaces.map { interface in
            Seen(
                index: interface.deviceIndex, key: interface.providerID, mac: interface.macAddress, network: interface.providerNetworkID,
                cidr: interface.cidr, primary: interface.primary, disabled: interface.disabled,
                addresses: interface.addresses.map { "\($0.value) \(name($0.type)) \($0.cidr) \(name($0.scope))" }
            )
        }
    }

    static func expected(_ cards: [VCSim.Card]) -> [Seen] {
        cards.enumerated().map { index, card in
            let cidr = card.addresses.first { $0.type == "ipv4" }?.cidr ?? card.addresses.first?.cidr ?? ""
            return Seen(
                index: Int32(index), key: "\(card.key)", mac: card.mac, network: card.network, cidr: cidr,
                primary: index == 0, disabled: !card.connected,
                addresses: card.addresses.map { "\($0.ip) \($0.type) \($0.cidr) \($0.scope)" }
            )
        }
    }

    static func name(_ type: ProviderV1.AddressType) -> String {
        switch type {
        case .ipv4: "ipv4"
        case .ipv6: "ipv6"
        default: "other"
        }
    }

    static func name(_ scope: ProviderV1.AddressScope) -> String {
        switch scope {
        case .public: "public"
        case .cloudLocal: "cloud-local"
        case .machineLocal: "machine-local"
        case .linkLocal: "link-local"
        default: "unspecified"
        }
    }

    /// Waits until the simulator has logged `count` requests of `method`
    /// from line `from` on (it logs each before answering it).
    static func waitForRequests(_ sim: VCSim, _ method: String, count: Int, from: Int) async throws {
        var next = from
        for seen in 0..<count {
            next = try await sim.process.stderrLines.waitForLine(from: next, "\(method) \(seen + 1) of \(count)", .seconds(20)) {
                $0 == "soap \(method)"
            }.index + 1
        }
    }

    static func count(_ sim: VCSim, _ method: String, from: Int) -> Int {
        sim.process.stderrLines.lines.dropFirst(from).filter { $0 == "soap \(method)" }.count
    }

    @Test func theShimReportsWhatVCenterSays() async throws {
        let sim = try await Self.vcsim.value
        let truth = sim.truth
        let cloud = Self.cloud(sim)
        let good = Self.credential(user: truth.user, password: truth.password)
        let mark = sim.process.stderrLines.lines.count
        try await Self.withShim(sim) { client in
            let verdict = try await client.validateCredential(cloud: cloud, credential: good, timeout: .seconds(30))
            #expect(verdict.valid, "\(verdict.reason)")
            #expect(!verdict.cached)
            #expect(try await client.validateCredential(cloud: cloud, credential: good, timeout: .seconds(30)).cached, "answered from the cache")

            let api = try #require(truth.named("api-1").first)
            let twins = truth.named("twin")
            #expect(twins.count == 2)
            let ids = truth.uniqueNames + ["twin"] + truth.removed + ["no-such-vm", api.uuid.uppercased()]
            let instances = try await client.instances(cloud: cloud, credential: good, ids: ids, timeout: .seconds(30))
            #expect(instances.map(\.instanceID) == ids, "index-aligned")
            for result in instances {
                let vm = result.instanceID == api.uuid.uppercased() ? api : truth.named(result.instanceID).first
                guard let vm else {
                    #expect(!result.found, "\(result.instanceID) is not a VM: not found")
                    continue
                }
                #expect(result.found, "\(vm.name)")
                #expect(result.status.rawStatus == vm.power_state, "\(vm.name)")
                #expect(result.status.message.hasPrefix("guest \(vm.guest_state)"), "\(vm.name): \(result.status.message)")
                let state: ProviderV1.InstanceState = switch vm.power_state {
                case "poweredOn": .running
                case "poweredOff", "suspended": .stopped
                default: .unknown
                }
                #expect(result.status.state == state, "\(vm.name)")
            }
            let twin = try #require(instances.first { $0.instanceID == "twin" })
            #expect(twin.status.rawStatus == twins[0].power_state, "the oldest of the two")
            #expect(twin.status.message.hasSuffix("one of 2 VMs named twin, reporting \(twins[0].moref)"), "\(twin.status.message)")
            #expect(truth.removed.allSatisfy { removed in instances.contains { $0.instanceID == removed && !$0.found } })
            #expect(truth.vms.contains { $0.power_state == "suspended" } && truth.vms.contains { $0.power_state == "poweredOff" })

            let found = instances.filter(\.found).map(\.instanceID)
            let interfaces = try await client.networkInterfaces(cloud: cloud, credential: good, ids: found + ["no-such-vm"], timeout: .seconds(30))
            #expect(interfaces.map(\.instanceID) == found + ["no-such-vm"], "index-aligned")
            #expect(interfaces.last?.found == false)
            for result in interfaces.dropLast() {
                let vm = try #require(result.instanceID == api.uuid.uppercased() ? api : truth.named(result.instanceID).first)
                #expect(result.found, "\(vm.name)")
                #expect(Self.seen(result.interfaces) == Self.expected(vm.cards), "\(vm.name)")
            }
            let web = try #require(interfaces.first { $0.instanceID == "web-1" })
            #expect(web.interfaces.count == 3)
            #expect(web.interfaces[0].addresses.map(\.type) == [.ipv4, .ipv6, .ipv6], "IPv4 and IPv6 guest addresses")
            #expect(web.interfaces[2].addresses.isEmpty && web.interfaces[2].disabled, "a card the guest does not report, not connected")
            #expect(interfaces.contains { $0.instanceID == "worker-1" && $0.found && $0.interfaces.isEmpty }, "a VM without cards")

            // Scoped to a folder (recursively): the VMs under it only.
            let apps = Self.cloud(sim, folder: "apps")
            let scoped = try await client.instances(cloud: apps, credential: good, ids: ["api-1", "worker-1", "web-1", "twin"], timeout: .seconds(30))
            #expect(scoped.map(\.found) == [true, true, false, true])
            #expect(scoped[3].status.rawStatus == twins.first { $0.folder == "apps" }?.power_state)
            #expect(!scoped[3].status.message.contains("VMs named"), "one twin in the folder")

            // Three views, each destroyed: the first call's; the second's,
            // whose "no-such-vm" the inventory read by the first does not
            // know; the folder's. One login for all; every page followed
            // (two objects a page).
            try await Self.waitForRequests(sim, "DestroyView", count: 3, from: mark)
            #expect(Self.count(sim, "CreateContainerView", from: mark) == 3)
            #expect(Self.count(sim, "Login", from: mark) == 1, "one session for every call with the credential")
            #expect(Self.count(sim, "ContinueRetrievePropertiesEx", from: mark) >= truth.vms.count / 2)

            let missing = await rpcError {
                _ = try await client.instances(cloud: Self.cloud(sim, folder: "nope"), credential: good, ids: ["web-1"], timeout: .seconds(30))
            }
            #expect(missing?.code == .failedPrecondition)
            #expect(missing?.message.contains("no VM folder \"nope\"") == true, "\(String(describing: missing))")
            var elsewhere = cloud
            elsewhere.attributes["datacenter"] = "DC9"
            let noDatacenter = await rpcError { _ = try await client.instances(cloud: elsewhere, credential: good, ids: ["web-1"], timeout: .seconds(30)) }
            #expect(noDatacenter?.code == .failedPrecondition)
            #expect(noDatacenter?.message.contains("no datacenter \"DC9\"") == true, "\(String(describing: noDatacenter))")
            // The region names the datacenter when the attribute is absent.
            var byRegion = cloud
            byRegion.attributes["datacenter"] = nil
            byRegion.region = truth.datacenter
            #expect(try await client.instances(cloud: byRegion, credential: good, ids: ["web-1"], timeout: .seconds(30)).first?.found == true)
        }
        // The shim ends its session when it stops.
        try await sim.process.stderrLines.waitForLine(from: mark, "the session's Logout") { $0 == "soap Logout" }
        #expect(Self.count(sim, "Logout", from: mark) == 1)
    }

    @Test func anEndedSessionIsReplacedByOneLogin() async throws {
        let sim = try await Self.vcsim.value
        let cloud = Self.cloud(sim, pageSize: 1000)
        let good = Self.credential(user: sim.truth.user, password: sim.truth.password)
        try await Self.withShim(sim) { client in
            let mark = sim.process.stderrLines.lines.count
            #expect(try await client.instances(cloud: cloud, credential: good, ids: ["web-1"], timeout: .seconds(30)).first?.found == true)
            try await sim.command("expire-sessions")
            // The first request in the old session gets NotAuthenticated:
            // one more login, and the call succeeds.
            #expect(try await client.instances(cloud: cloud, credential: good, ids: ["db-1"], timeout: .seconds(30)).first?.found == true)
            #expect(try await client.instances(cloud: cloud, credential: good, ids: ["web-1"], timeout: .seconds(30)).first?.found == true)
            // One view (the first call's inventory); the others read their
            // machines by reference.
            try await Self.waitForRequests(sim, "DestroyView", count: 1, from: mark)
            #expect(Self.count(sim, "CreateContainerView", from: mark) == 1)
            #expect(Self.count(sim, "Login", from: mark) == 2)
        }
    }

    /// The scope's inventory (names and UUIDs) is read once and kept; a
    /// batch then reads only its own machines, by reference. A rename and a
    /// removal in vCenter are seen by the very next call, which reads the
    /// inventory anew; with `--inventory-ttl 0` every call reads it. A
    /// simulator of its own: this test renames and destroys VMs.
    @Test func aBatchReadsItsOwnMachinesAndTheNextCallSeesRenamesAndRemovals() async throws {
        let sim = try await VCSim.start()
        defer { sim.process.kill() }
        let truth = sim.truth
        let cloud = Self.cloud(sim, pageSize: 1000)
        let good = Self.credential(user: truth.user, password: truth.password)
        let web = try #require(truth.named("web-1").first)
        func views(from mark: Int) -> Int { Self.count(sim, "CreateContainerView", from: mark) }
        let log = try await Self.withShim(sim) { client in
            var mark = sim.process.stderrLines.lines.count
            let first = try await client.instances(cloud: cloud, credential: good, ids: ["web-1", "db-1"], timeout: .seconds(30))
            #expect(first.map(\.found) == [true, true])
            #expect(views(from: mark) == 1, "the first call reads the inventory")

            mark = sim.process.stderrLines.lines.count
            for _ in 0..<3 {
                let again = try await client.instances(cloud: cloud, credential: good, ids: ["web-1", "db-1"], timeout: .seconds(30))
                #expect(again.map(\.status.rawStatus) == ["poweredOn", "poweredOff"])
            }
            let nics = try await client.networkInterfaces(cloud: cloud, credential: good, ids: ["web-1"], timeout: .seconds(30))
            #expect(Self.seen(nics[0].interfaces) == Self.expected(web.cards))
            #expect(views(from: mark) == 0, "later calls read their machines by reference")
            #expect(Self.count(sim, "RetrievePropertiesEx", from: mark) == 4, "one read per call")

            // Renamed in vCenter: the old name is not found and the new one
            // is, at once.
            try await sim.command("rename web-1 web-9")
            mark = sim.process.stderrLines.lines.count
            let renamed = try await client.instances(cloud: cloud, credential: good, ids: ["web-1", "web-9"], timeout: .seconds(30))
            #expect(renamed.map(\.found) == [false, true])
            #expect(renamed[1].status.rawStatus == "poweredOn")
            let moved = try await client.networkInterfaces(cloud: cloud, credential: good, ids: ["web-9", "web-1"], timeout: .seconds(30))
            #expect(moved.map(\.found) == [true, false])
            #expect(Self.seen(moved[0].interfaces) == Self.expected(web.cards), "the same VM under its new name")
            #expect(views(from: mark) == 2, "each call with an unknown name reads the inventory once")

            // Destroyed in vCenter: not found at once, though the inventory
            // still named it.
            try await sim.command("destroy db-1")
            mark = sim.process.stderrLines.lines.count
            let gone = try await client.instances(cloud: cloud, credential: good, ids: ["db-1", "web-9"], timeout: .seconds(30))
            #expect(gone.map(\.found) == [false, true])
            #expect(views(from: mark) == 1, "the machine gone since: the inventory read anew")
            try await Self.waitForRequests(sim, "DestroyView", count: 1, from: mark)
        }
        // Each read of the inventory is logged (debug) with its reason.
        let reasons = log.split(separator: "\n").filter { $0.contains("read the scope's inventory") }.map { line in
            ["none kept", "an id it does not name", "gone or renamed"].first { line.contains($0) } ?? String(line)
        }
        #expect(reasons == ["none kept", "an id it does not name", "an id it does not name", "gone or renamed"], "\(reasons)")

        // Off: every call reads the scope.
        try await Self.withShim(sim, arguments: ["--inventory-ttl", "0"]) { client in
            let mark = sim.process.stderrLines.lines.count
            for _ in 0..<3 {
                #expect(try await client.instances(cloud: cloud, credential: good, ids: ["web-9"], timeout: .seconds(30)).first?.found == true)
            }
            try await Self.waitForRequests(sim, "DestroyView", count: 3, from: mark)
            #expect(views(from: mark) == 3)
        }
    }

    @Test func credentialProblemsAreTheContractsCodes() async throws {
        let sim = try await Self.vcsim.value
        let truth = sim.truth
        let cloud = Self.cloud(sim)
        try await Self.withShim(sim) { client in
            let wrong = Self.credential(user: truth.user, password: Self.secretMarker)
            let verdict = try await client.validateCredential(cloud: cloud, credential: wrong, timeout: .seconds(30))
            #expect(!verdict.valid)
            #expect(verdict.reason.contains("InvalidLogin"), "\(verdict.reason)")
            #expect(!verdict.reason.contains(Self.secretMarker))
            let unauthenticated = await rpcError { _ = try await client.instances(cloud: cloud, credential: wrong, ids: ["web-1"], timeout: .seconds(30)) }
            #expect(unauthenticated?.code == .unauthenticated)
            #expect(unauthenticated?.message.contains(Self.secretMarker) == false)

            let noPermission = Self.credential(user: truth.noperm_user, password: truth.noperm_password)
            let denied = await rpcError { _ = try await client.instances(cloud: cloud, credential: noPermission, ids: ["web-1"], timeout: .seconds(30)) }
            #expect(denied?.code == .permissionDenied, "\(String(describing: denied))")
            #expect(denied?.message.contains("NoPermission") == true)
            let deniedVerdict = try await client.validateCredential(cloud: cloud, credential: noPermission, timeout: .seconds(30))
            #expect(!deniedVerdict.valid && deniedVerdict.reason.contains("NoPermission"))

            let noPassword = ProviderV1.Credential.with { $0.name = "half"; $0.authType = "userpass"; $0.attributes = ["user": truth.user] }
            let half = try await client.validateCredential(cloud: cloud, credential: noPassword, timeout: .seconds(30))
            #expect(!half.valid && half.reason == "credential half needs the attribute password")
            let refused = await rpcError { _ = try await client.instances(cloud: cloud, credential: noPassword, ids: ["web-1"], timeout: .seconds(30)) }
            #expect(refused?.code == .unauthenticated)

            let good = Self.credential(user: truth.user, password: truth.password)
            var noEndpoint = cloud
            noEndpoint.endpoint = ""
            let invalid = await rpcError { _ = try await client.instances(cloud: noEndpoint, credential: good, ids: ["web-1"], timeout: .seconds(30)) }
            #expect(invalid?.code == .invalidArgument)
            #expect(invalid?.message == "the vsphere cloud spec needs an endpoint, e.g. https://vcenter.example.com/sdk")
            var plain = cloud
            plain.endpoint = "http://vcenter.example.com/sdk"
            let tlsOnly = await rpcError { _ = try await client.instances(cloud: plain, credential: good, ids: ["web-1"], timeout: .seconds(30)) }
            #expect(tlsOnly?.code == .invalidArgument)

            // Nothing listens there: retried with backoff inside the deadline, then Unavailable.
            var nowhere = cloud
            nowhere.endpoint = "http://127.0.0.1:1/sdk"
            let started = ContinuousClock.now
            let unreachable = await rpcError { _ = try await client.instances(cloud: nowhere, credential: good, ids: ["web-1"], timeout: .seconds(3)) }
            #expect(unreachable?.code == .unavailable, "\(String(describing: unreachable))")
            #expect(unreachable?.message.hasPrefix("RetrieveServiceContent: cannot reach vCenter at 127.0.0.1:1") == true)
            #expect(ContinuousClock.now - started < .seconds(3), "reported before the caller's deadline")
        }
    }

    @Test func theControllerPollsVSphereAndAWrongPasswordStopsAllLogins() async throws {
        let sim = try await Self.vcsim.value
        let truth = sim.truth
        let h = try ControllerHarness()
        defer { h.remove() }
        let provider = """
              vcenter:
                shim:
                  command: \(BuiltProducts.path(of: "provider-shim"))
                  args: [vsphere]
                cloud:
                  type: vsphere
                  endpoint: \(truth.url)
                  attributes: {datacenter: \(truth.datacenter), page-size: "3"}
            """
        let settings = ControllerHarness.fastSettings.replacingOccurrences(of: "short_poll_cap: 400ms", with: "short_poll_cap: 200ms\n  backoff_factor: 1")
        try h.writeConfig(providers: [provider], settings: settings)
        // The harness's credential is a placeholder: set the real one as an operator would.
        let controller = try await h.start()
        let good = h.directory.file("vcenter.yaml")
        #expect(FileManager.default.createFile(atPath: good, contents: Data("user: \(truth.user)\npassword: \(truth.password)\n".utf8), attributes: [.posixPermissions: 0o600]))
        #expect(try await h.cli(["credentials", "set", "vcenter", "main", "--auth-type", "userpass", "--file", good]).status == 0)

        // Pending agents keep every machine in the short group: polled all the time.
        let names = truth.uniqueNames
        for name in names {
            try await h.add("m-\(name)", provider: "vcenter", instance: name, agent: .pending)
        }
        let machines = try await h.waitForMachines("the store to match the simulator", .seconds(60)) { machines in
            names.allSatisfy { name in
                guard let machine = machines["m-\(name)"], let vm = truth.named(name).first else { return false }
                return machine.instanceStatus.rawStatus == vm.power_state && Self.seen(machine.interfaces) == Self.expected(vm.cards)
            }
        }
        #expect(machines.count == names.count)
        #expect(machines.values.allSatisfy { $0.pollError == nil })

        // A change in vCenter reaches the store.
        try await sim.command("power-off web-1")
        try await h.waitForMachines("web-1 to be seen stopped") { $0["m-web-1"]?.instanceStatus.state == .stopped }
        try await sim.command("power-on web-1")
        try await h.waitForMachines("web-1 to be seen running") { $0["m-web-1"]?.instanceStatus.state == .running }

        // A wrong password: invalidated at the gate, and then not one login.
        let wrongFile = h.directory.file("wrong.yaml")
        #expect(FileManager.default.createFile(atPath: wrongFile, contents: Data("user: \(truth.user)\npassword: \(Self.secretMarker)\n".utf8), attributes: [.posixPermissions: 0o600]))
        let mark = controller.stderrLines.lines.count
        let simMark = sim.process.stderrLines.lines.count
        #expect(try await h.cli(["credentials", "set", "vcenter", "main", "--auth-type", "userpass", "--file", wrongFile]).status == 0)
        let invalidated = try await controller.stderrLines.waitForLine(containing: "credential invalidated", from: mark)
        // The validation's login, refused.
        try await sim.process.stderrLines.waitForLine(from: simMark, "the login with the wrong password") { $0 == "soap Login" }
        let loginsAtInvalidation = sim.logins
        var next = invalidated.index + 1
        for _ in 0..<5 {
            next = try await controller.stderrLines.waitForLine(containing: "batch refused by the credential gate", from: next).index + 1
        }
        #expect(sim.logins == loginsAtInvalidation, "no login with the invalid credential")
        let paused = try await h.store.machines()
        #expect(paused.allSatisfy { $0.pollError?.hasPrefix("credential invalid") == true })

        // Corrected: validated, polled again.
        let beforeCorrection = sim.process.stderrLines.lines.count
        #expect(try await h.cli(["credentials", "set", "vcenter", "main", "--auth-type", "userpass", "--file", good]).status == 0)
        try await h.waitForMachines("polling to resume", .seconds(30)) { $0.values.allSatisfy { $0.pollError == nil } }
        try await sim.process.stderrLines.waitForLine(from: beforeCorrection, "a RetrievePropertiesEx after the correction") { $0 == "soap RetrievePropertiesEx" }
        #expect(try await h.stop(controller) == 0)
        let log = try await controller.output().stderr
        #expect(!log.contains(Self.secretMarker) && !log.contains(truth.password), "a secret reached the controller's log")
    }
}
