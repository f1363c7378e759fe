public import Core
public import ProviderShim
internal import Foundation
public import Logging
internal import NIOConcurrencyHelpers
internal import SwiftProtobuf

/// `provider-shim vsphere`: the provider contract on VMware vSphere
/// (vCenter), docs/DESIGN.md §7.3.
///
/// - The scope's inventory: the names and instance UUIDs of its virtual
///   machines through one container view (CreateContainerView, one
///   RetrievePropertiesEx and its continuations, DestroyView), kept for
///   `inventoryTTL` (``VSphereInventoryCache``) and read anew whenever a
///   call finds it wrong.
/// - Instances: the ids matched by name, or by instance UUID, in the
///   inventory; then one RetrievePropertiesEx of those machines' states, by
///   reference.
/// - NetworkInterfaces: the same, for their devices and guest NICs.
/// - ValidateCredential: a real Login, cached per credential fingerprint
///   (`credentialTTL`, default 5 min).
///
/// Credential (auth type `userpass`): attributes `user`, `password`. Cloud
/// spec: `endpoint` (required; a bare host means `https://HOST/sdk`; plain
/// HTTP only on loopback); attributes `datacenter` (an inventory path;
/// the spec's `region` when absent), `folder` (a path under the
/// datacenter's VM folder), `page-size` (RetrievePropertiesEx maxObjects,
/// 1-10000, default 1000).
public struct VSphereBackend: ProviderBackend {
    private let client: VSphereClient
    private let credentialTTL: Duration
    private let cache = NIOLockedValueBox<[String: (valid: Bool, reason: String, at: ContinuousClock.Instant)]>([:])
    /// Names already warned about as shared by several VMs (per scope).
    private let warned = NIOLockedValueBox<Set<String>>([])
    private let inventories: VSphereInventoryCache
    private let logger: Logger

    /// Most ids per call: a batch's devices and guest NICs stay a few MiB.
    public static let maxBatchSize: UInt32 = 200

    /// - Parameter inventoryTTL: how long a scope's names and instance
    ///   UUIDs are used between calls (``VSphereInventoryCache``); zero
    ///   reads the whole scope on every call.
    public init(client: VSphereClient, credentialTTL: Duration = .seconds(300), inventoryTTL: Duration = .seconds(60), logger: Logger) {
        self.client = client
        self.credentialTTL = credentialTTL
        self.inventories = VSphereInventoryCache(maxAge: inventoryTTL)
        self.logger = logger
    }

    public var identity: ShimIdentity {
        ShimIdentity(name: "vsphere", version: ProductVersion.current, cloudTypes: ["vsphere"], capabilities: .with {
            $0.maxBatchSize = Self.maxBatchSize
            $0.credentialCache = true
        })
    }

    // MARK: - Credentials and scope

    static func credentials(_ credential: ProviderV1.Credential) throws(RPCError) -> VSphereCredentials {
        let name = credential.name
        guard credential.authType.isEmpty || credential.authType == "userpass" else {
            throw RPCError(.unauthenticated, "credential \(name) has auth type \(VSphereSOAP.oneLine(credential.authType, limit: 50)); the vsphere backend takes userpass")
        }
        var values: [String] = []
        for attribute in ["user", "password"] {
            guard let value = credential.attributes[attribute], !value.isEmpty else {
                throw RPCError(.unauthenticated, "credential \(name) needs the attribute \(attribute)")
            }
            guard VSphereSOAP.isXMLSafe(value) else {
                throw RPCError(.unauthenticated, "credential \(name): the attribute \(attribute) holds a control character, which SOAP cannot carry")
            }
            values.append(value)
        }
        return VSphereCredentials(name: name, user: values[0], password: values[1])
    }

    private static func expired(_ credential: ProviderV1.Credential) -> Bool {
        guard credential.expiresAtUnixNano != 0 else { return false }
        return Double(credential.expiresAtUnixNano) / 1e9 <= Date().timeIntervalSince1970
    }

    /// Where the machines are: a datacenter and a folder under its VM folder.
    struct Scope: Sendable {
        var datacenter: String
        var folder: String
        var pageSize: Int

        /// The inventory path of the folder whose machines are looked at.
        var folderPath: String { folder.isEmpty ? "\(datacenter)/vm" : "\(datacenter)/vm/\(folder)" }
        var shown: String { folder.isEmpty ? "datacenter \(datacenter)" : "folder \(folder) of datacenter \(datacenter)" }

        static func of(_ cloud: ProviderV1.CloudSpec) throws(RPCError) -> Scope {
            let trim: (String) -> String = { $0.trimmingCharacters(in: CharacterSet(charactersIn: "/ ")) }
            var datacenter = trim(cloud.attributes["datacenter"] ?? "")
            if datacenter.isEmpty { datacenter = trim(cloud.region) }
            guard !datacenter.isEmpty else {
                throw RPCError(.invalidArgument, "the vsphere cloud spec needs the attribute datacenter (or a region naming the datacenter), e.g. DC0")
            }
            let folder = trim(cloud.attributes["folder"] ?? "")
            for (what, value) in [("datacenter", datacenter), ("folder", folder)] where !VSphereSOAP.isXMLSafe(value) || value.contains("//") {
                throw RPCError(.invalidArgument, "the vsphere cloud attribute \(what) \(VSphereSOAP.quoted(value)) is not an inventory path such as DC0 or apps/web")
            }
            var pageSize = 1000
            if let text = cloud.attributes["page-size"] {
                guard let value = Int(text), (1...10000).contains(value) else {
                    throw RPCError(.invalidArgument, "cloud attribute page-size must be a number from 1 to 10000, not \(VSphereSOAP.quoted(text))")
                }
                pageSize = value
            }
            return Scope(datacenter: datacenter, folder: folder, pageSize: pageSize)
        }
    }

    private func prepare(_ cloud: ProviderV1.CloudSpec, _ credential: ProviderV1.Credential, deadline: ContinuousClock.Instant?) throws(RPCError)
        -> (VSphereClient.Target, Scope)
    {
        if Self.expired(credential) { throw RPCError(.unauthenticated, "credential \(credential.name) has expired") }
        let endpoint = try VSphereEndpoint.of(cloud)
        let credentials = try Self.credentials(credential)
        let scope = try Scope.of(cloud)
        return (client.target(endpoint, credentials, deadline: deadline), scope)
    }

    /// The folder whose machines `scope` means, checked to be under a
    /// datacenter: a clear error names which of the two is missing.
    private func resolve(_ scope: Scope, _ target: VSphereClient.Target, _ session: VSphereClient.Session) async throws -> VSphereMoRef {
        let host = target.endpoint.host
        guard let datacenter = try await client.find(scope.datacenter, target, session) else {
            throw RPCError(.failedPrecondition, "vCenter at \(host) has no datacenter \(VSphereSOAP.quoted(scope.datacenter)) (or user \(target.credentials.user) cannot see it)")
        }
        guard datacenter.type == "Datacenter" else {
            throw RPCError(.failedPrecondition, "\(VSphereSOAP.quoted(scope.datacenter)) in vCenter at \(host) is a \(datacenter.type), not a datacenter")
        }
        guard let folder = try await client.find(scope.folderPath, target, session) else {
            throw RPCError(.failedPrecondition, "datacenter \(scope.datacenter) in vCenter at \(host) has no VM folder \(VSphereSOAP.quoted(scope.folder.isEmpty ? "vm" : scope.folder)) (or user \(target.credentials.user) cannot see it)")
        }
        guard folder.type == "Folder" || folder.type == "VirtualApp" else {
            throw RPCError(.failedPrecondition, "\(VSphereSOAP.quoted(scope.folder)) under datacenter \(scope.datacenter) in vCenter at \(host) is a \(folder.type), not a folder")
        }
        return folder
    }

    // MARK: - ValidateCredential

    public func validateCredential(_ request: ProviderV1.ValidateCredentialRequest, context: RPCServerContext) async throws
        -> ProviderV1.ValidateCredentialResponse
    {
        if Self.expired(request.credential) {
            return .with { $0.valid = false; $0.reason = "credential \(request.credential.name) has expired" }
        }
        let credentials: VSphereCredentials
        do {
            credentials = try Self.credentials(request.credential)
        } catch {
            return .with { $0.valid = false; $0.reason = error.message }
        }
        let endpoint = try VSphereEndpoint.of(request.cloud)
        let key = credentials.fingerprint(endpoint)
        if let cached = cache.withLockedValue({ $0[key] }), ContinuousClock.now - cached.at < credentialTTL {
            return .with { $0.valid = cached.valid; $0.reason = cached.reason; $0.cached = true }
        }
        let verdict: (valid: Bool, reason: String)
        do {
            try await client.verifyLogin(client.target(endpoint, credentials, deadline: context.deadline))
            verdict = (true, "")
        } catch let error as RPCError where error.code == .unauthenticated || error.code == .permissionDenied {
            verdict = (false, error.message)
        }
        cache.withLockedValue { $0[key] = (verdict.valid, verdict.reason, .now) }
        return .with { $0.valid = verdict.valid; $0.reason = verdict.reason }
    }

    // MARK: - Instances

    /// What Instances reads of each machine.
    static let statusProperties = ["name", "config.instanceUuid", "runtime.powerState", "runtime.connectionState", "guest.guestState"]

    public func instances(_ request: ProviderV1.InstancesRequest, context: RPCServerContext) async throws -> ProviderV1.InstancesResponse {
        let (target, scope) = try prepare(request.cloud, request.credential, deadline: context.deadline)
        let matched = try await machines(request.instanceIds, properties: Self.statusProperties, scope, target)
        warnAboutSharedNames(matched, target, scope)
        return VSphereMapping.instances(ids: request.instanceIds) { matched[$0] }
    }

    /// What the scope's inventory (``VSphereInventoryCache``) says of a
    /// scope's names and UUIDs.
    static let inventoryProperties = ["name", "config.instanceUuid"]

    /// The machines `ids` name in `scope`, each with `properties` read by
    /// reference, and how many machines bear its name.
    ///
    /// The names come from the scope's cached inventory while it is young.
    /// It is read anew (one container view) when it is old or absent, when
    /// an id is not in it, and when a machine it gave is gone or no longer
    /// bears the id; a second such read is the last. An id not matched after
    /// a read of this call is not found.
    private func machines(_ ids: [String], properties: [String], _ scope: Scope, _ target: VSphereClient.Target) async throws
        -> [String: VSphereMapping.Inventory.Match]
    {
        let wanted = Set(ids.filter { !$0.isEmpty })
        guard !wanted.isEmpty else { return [:] }
        let key = VSphereInventoryCache.key(target, folderPath: scope.folderPath)
        let read = Array(Set(properties + Self.inventoryProperties)).sorted()
        return try await client.withSession(target) { session in
            var inventory = inventories.inventory(key)
            var why = "none kept, or too old"
            var reads = 0
            while true {
                if inventory == nil {
                    let startedAt = ContinuousClock.now
                    let folder = try await resolve(scope, target, session)
                    let all = try await client.machines(under: folder, properties: Self.inventoryProperties, pageSize: scope.pageSize, target, session)
                    inventory = VSphereMapping.Inventory(all)
                    inventories.store(key, inventory!, readAt: startedAt)
                    reads += 1
                    logger.debug("read the scope's inventory", metadata: ["scope": "\(scope.shown)", "vms": "\(all.count)", "why": "\(why)"])
                }
                let names = inventory!
                var guesses: [String: VSphereMapping.Inventory.Match] = [:]
                for id in wanted {
                    if let match = names.match(id) { guesses[id] = match }
                }
                if guesses.count < wanted.count && reads == 0 {
                    inventory = nil
                    why = "an id it does not name"
                    continue
                }
                let refs = Array(Set(guesses.values.map(\.machine.ref))).sorted(by: VSphereMoRef.precedes)
                let found = try await client.machines(refs, properties: read, pageSize: scope.pageSize, target, session)
                let byRef = Dictionary(found.filter { !$0.gone }.map { ($0.ref, $0) }, uniquingKeysWith: { first, _ in first })
                var matched: [String: VSphereMapping.Inventory.Match] = [:]
                for (id, guess) in guesses {
                    guard let machine = byRef[guess.machine.ref], VSphereMapping.Inventory.bears(machine, id) else { continue }
                    matched[id] = VSphereMapping.Inventory.Match(machine: machine, sameName: guess.sameName)
                }
                if matched.count < guesses.count && reads < 2 {
                    inventory = nil
                    why = "a VM it named is gone or renamed"
                    continue
                }
                return matched
            }
        }
    }

    /// Several machines with one name are reported as the oldest of them
    /// (VSphereMapping.Inventory.match), with a note in the message; the
    /// log says so once per name and scope. Not "not found" (the
    /// controller would take the machine for gone) and not an error (it
    /// would fail the whole batch).
    private func warnAboutSharedNames(_ matched: [String: VSphereMapping.Inventory.Match], _ target: VSphereClient.Target, _ scope: Scope) {
        for (id, match) in matched where match.sameName > 1 {
            let key = "\(target.endpoint.url)|\(scope.folderPath)|\(id)"
            let first = warned.withLockedValue { warned in
                if warned.count > 10_000 { warned.removeAll() }
                return warned.insert(key).inserted
            }
            guard first else { continue }
            logger.warning("several VMs share a name; reporting the oldest", metadata: [
                "name": "\(id)", "count": "\(match.sameName)", "reported": "\(match.machine.ref.value)", "scope": "\(scope.shown)",
            ])
        }
    }

    // MARK: - NetworkInterfaces

    /// What NetworkInterfaces reads of each matched machine.
    static let interfaceProperties = ["config.hardware.device", "guest.net"]

    public func networkInterfaces(_ request: ProviderV1.NetworkInterfacesRequest, context: RPCServerContext) async throws
        -> ProviderV1.NetworkInterfacesResponse
    {
        let (target, scope) = try prepare(request.cloud, request.credential, deadline: context.deadline)
        let matched = try await machines(request.instanceIds, properties: Self.interfaceProperties, scope, target)
        return .with {
            $0.results = request.instanceIds.map { id in
                .with {
                    $0.instanceID = id
                    guard let match = matched[id] else { return }
                    $0.found = true
                    $0.interfaces = VSphereMapping.interfaces(match.machine)
                }
            }
        }
    }
}
