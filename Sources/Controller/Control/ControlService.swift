public import Core
public import Logging
internal import Foundation
internal import SwiftProtobuf

/// Serves `instancepoller.control.v1.Controller` (the CLI's API) over the
/// store and the provider fleet. Requests are checked field by field
/// (InvalidArgument names the field); credential attributes come in, never
/// go out.
public struct ControlService: Sendable {
    public struct Identity: Sendable {
        public var pid: Int32
        public var version: String
        public var startedAt: Timestamp
        public var storePath: String
        public var runtimeDirectory: String

        public init(pid: Int32, version: String, startedAt: Timestamp, storePath: String, runtimeDirectory: String) {
            self.pid = pid
            self.version = version
            self.startedAt = startedAt
            self.storePath = storePath
            self.runtimeDirectory = runtimeDirectory
        }
    }

    let identity: Identity
    let store: any MachineStore
    let fleet: ProviderFleet
    let clock: any PollClock
    let environment: [String: String]
    let logger: Logger
    /// Wakes every waiting `Events` call from one watcher of the store.
    public let eventsFeed: EventsFeed

    /// - Parameter eventsFeed: shared by the `Events` long polls; nudge it
    ///   on this process's store changes. Default: one on `store`.
    public init(
        identity: Identity, store: any MachineStore, fleet: ProviderFleet, clock: any PollClock, environment: [String: String],
        eventsFeed: EventsFeed? = nil, logger: Logger
    ) {
        self.identity = identity
        self.store = store
        self.fleet = fleet
        self.clock = clock
        self.environment = environment
        self.eventsFeed = eventsFeed ?? EventsFeed(store: store, clock: clock)
        self.logger = logger
    }

    /// Most events one `Events` answer holds.
    static let eventsLimit = 1000

    public func register(into registry: inout RPCServiceRegistry) {
        registry.register(ControlV1.status) { _, _ in try await status() }
        registry.register(ControlV1.addMachine) { request, _ in
            let machine = try await addMachine(request)
            return .with { $0.machine = machine }
        }
        registry.register(ControlV1.removeMachine) { request, _ in
            _ = try await existingMachine(request.id)
            try await store.removeMachine(id: request.id)
            logger.info("machine removed", metadata: ["machine": "\(request.id)"])
            return .init()
        }
        registry.register(ControlV1.listMachines) { request, _ in
            let schedule = try await scheduleByID()
            let machines = try await store.machines().filter { request.provider.isEmpty || $0.provider == request.provider }
            return .with { $0.machines = machines.sorted { $0.id < $1.id }.map { Self.wire($0, schedule[$0.id]) } }
        }
        registry.register(ControlV1.getMachine) { request, _ in
            let machine = try await existingMachine(request.id)
            let entry = try await scheduleByID()[machine.id]
            let history = try await store.statusHistory(machineID: machine.id)
            return .with {
                $0.machine = Self.wire(machine, entry)
                $0.statusHistory = history.map { record in
                    .with {
                        $0.status = Self.wire(record)
                        $0.atUnixNano = record.updatedAt?.nanosecondsSinceEpoch ?? 0
                    }
                }
            }
        }
        registry.register(ControlV1.setAgentStatus) { request, _ in
            let status = try Self.agentStatus(request.agentStatus, field: "agent_status")
            _ = try await existingMachine(request.id)
            let machine = try await store.reportAgentStatus(machineID: request.id, status)
            return .with { $0.machine = Self.wire(machine, nil) }
        }
        registry.register(ControlV1.setCredential) { request, _ in
            let credential = try await setCredential(request)
            return .with { $0.credential = credential }
        }
        registry.register(ControlV1.listCredentials) { _, _ in
            let credentials = try await store.credentials().sorted { ($0.provider, $0.name) < ($1.provider, $1.name) }.map(Self.wire)
            return .with { $0.credentials = credentials }
        }
        registry.register(ControlV1.validateCredential) { request, _ in try await validateCredential(request) }
        registry.register(ControlV1.listProviders) { _, _ in
            let providers = await providers()
            return .with { $0.providers = providers }
        }
        registry.register(ControlV1.swapProvider) { request, _ in try await swapProvider(request) }
        registry.register(ControlV1.events) { request, _ in try await events(request) }
    }

    // MARK: - Machines

    private func existingMachine(_ id: String) async throws -> Machine {
        guard !id.isEmpty else { throw RPCError(.invalidArgument, "id: a machine id is needed") }
        guard let machine = try await store.machine(id: id) else { throw RPCError(.notFound, "no machine \"\(id)\"") }
        return machine
    }

    private func addMachine(_ request: Instancepoller_Control_V1_AddMachineRequest) async throws -> ControlV1.Machine {
        guard Self.isPlain(request.id) else {
            throw RPCError(.invalidArgument, "id: machine ids use letters, digits, '-', '_', '.', '/' and ':' (got \"\(request.id)\")")
        }
        try await knownProvider(request.provider)
        guard !request.credential.isEmpty else { throw RPCError(.invalidArgument, "credential: name the credential its cloud calls use") }
        let agent = try Self.agentStatus(request.agentStatus.isEmpty ? "none" : request.agentStatus, field: "agent_status")
        if try await store.machine(id: request.id) != nil {
            throw RPCError(.alreadyExists, "machine \"\(request.id)\" already exists")
        }
        let machine = Machine(
            id: request.id, provider: request.provider, credential: request.credential, instanceID: request.instanceID,
            manual: request.manual, agentStatus: agent,
            // Added with its agent started: that is its start (and the answer says so).
            agentStartedAt: agent == .started ? clock.now : nil
        )
        try await store.addMachine(machine)
        logger.info("machine added", metadata: ["machine": "\(machine.id)", "provider": "\(machine.provider)"])
        return Self.wire(machine, nil)
    }

    private func scheduleByID() async throws -> [String: ScheduleEntry] {
        Dictionary(try await store.schedule().map { ($0.machineID, $0) }, uniquingKeysWith: { first, _ in first })
    }

    private func knownProvider(_ name: String) async throws {
        let configured = await fleet.providerNames
        guard configured.contains(name) else {
            throw RPCError(.invalidArgument, "provider: no provider \"\(name)\" is configured (configured: \(configured.joined(separator: ", ")))")
        }
    }

    static func agentStatus(_ text: String, field: String) throws -> Machine.AgentStatus {
        guard let status = Machine.AgentStatus(rawValue: text) else {
            throw RPCError(.invalidArgument, "\(field): unknown agent status \"\(text)\" (expected one of: \(Machine.AgentStatus.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return status
    }

    static func isPlain(_ text: String) -> Bool {
        !text.isEmpty && text.count <= 256 && text.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "-_./:".unicodeScalars.contains($0)
        }
    }

    static func wire(_ machine: Machine, _ entry: ScheduleEntry?) -> ControlV1.Machine {
        .with {
            $0.id = machine.id
            $0.provider = machine.provider
            $0.credential = machine.credential
            $0.instanceID = machine.instanceID
            $0.life = machine.life.rawValue
            $0.manual = machine.manual
            $0.agentStatus = machine.agentStatus.rawValue
            $0.agentMessage = machine.agentMessage
            $0.agentStartedUnixNano = machine.agentStartedAt?.nanosecondsSinceEpoch ?? 0
            $0.status = wire(machine.instanceStatus)
            $0.statusUpdatedUnixNano = machine.instanceStatus.updatedAt?.nanosecondsSinceEpoch ?? 0
            $0.interfaces = machine.interfaces
            $0.pollError = machine.pollError ?? ""
            if let entry {
                $0.group = entry.group.rawValue
                $0.intervalNano = entry.interval.totalNanoseconds
                $0.dueUnixNano = entry.due.nanosecondsSinceEpoch
            }
        }
    }

    static func wire(_ status: InstanceStatusRecord) -> ProviderV1.InstanceStatus {
        .with {
            $0.state = status.state
            $0.rawStatus = status.rawStatus
            $0.message = status.message
        }
    }

    // MARK: - Credentials

    private func setCredential(_ request: Instancepoller_Control_V1_SetCredentialRequest) async throws -> ControlV1.Credential {
        try await knownProvider(request.provider)
        guard Self.isPlain(request.name) else { throw RPCError(.invalidArgument, "name: credential names use letters, digits, '-', '_' and '.'") }
        guard !request.authType.isEmpty else { throw RPCError(.invalidArgument, "auth_type: an auth type is needed, e.g. access-key") }
        guard !request.attributes.isEmpty else { throw RPCError(.invalidArgument, "attributes: a credential needs at least one attribute") }
        let credential = StoredCredential(
            provider: request.provider, name: request.name, authType: request.authType, attributes: request.attributes,
            expiresAt: request.expiresUnixNano == 0 ? nil : Timestamp(nanosecondsSinceEpoch: request.expiresUnixNano)
        )
        try await store.setCredential(credential)
        logger.info("credential set", metadata: ["credential": "\(credential.provider)/\(credential.name)"])
        return Self.wire(credential)
    }

    static func wire(_ credential: StoredCredential) -> ControlV1.Credential {
        .with {
            $0.provider = credential.provider
            $0.name = credential.name
            $0.authType = credential.authType
            $0.attributeNames = credential.attributes.keys.sorted()
            $0.expiresUnixNano = credential.expiresAt?.nanosecondsSinceEpoch ?? 0
            $0.valid = credential.invalidReason == nil
            $0.invalidReason = credential.invalidReason ?? ""
        }
    }

    private func validateCredential(_ request: Instancepoller_Control_V1_ValidateCredentialRequest) async throws
        -> Instancepoller_Control_V1_ValidateCredentialResponse
    {
        guard let stored = try await store.credential(provider: request.provider, name: request.name) else {
            throw RPCError(.notFound, "no credential \(request.provider)/\(request.name)")
        }
        guard let endpoint = fleet.endpoint(for: request.provider) else {
            throw RPCError(.failedPrecondition, "provider \(request.provider) is not configured")
        }
        let answer: ProviderV1.ValidateCredentialResponse
        do {
            answer = try await endpoint.access.validateCredential(stored.wire, cloud: endpoint.cloud)
        } catch let down as ShimUnavailable {
            throw RPCError(.unavailable, "\(down)")
        }
        return .with {
            $0.valid = answer.valid
            $0.reason = answer.reason
        }
    }

    // MARK: - Providers

    private func providers() async -> [ControlV1.ProviderInfo] {
        var result: [ControlV1.ProviderInfo] = []
        for (config, snapshot) in await fleet.snapshots() {
            result.append(Self.wire(config, snapshot))
        }
        return result
    }

    static func wire(_ config: ProviderConfig, _ snapshot: ProviderSupervisor.Snapshot) -> ControlV1.ProviderInfo {
        .with {
            $0.name = config.name
            $0.cloudType = config.cloud.type
            $0.command = snapshot.command.executable
            $0.args = snapshot.command.arguments
            $0.state = snapshot.pid == nil ? "starting" : "running"
            $0.pid = snapshot.pid ?? 0
            $0.restarts = UInt32(clamping: snapshot.restarts)
            $0.lastProblem = snapshot.lastProblem ?? ""
            $0.shimName = snapshot.shimName
            $0.shimVersion = snapshot.shimVersion
        }
    }

    private func swapProvider(_ request: Instancepoller_Control_V1_SwapProviderRequest) async throws -> Instancepoller_Control_V1_SwapProviderResponse {
        try await knownProvider(request.provider)
        guard !request.command.isEmpty else { throw RPCError(.invalidArgument, "command: the new shim's command is needed") }
        let located = ShimCommand.locate(request.command, base: FileManager.default.currentDirectoryPath, path: environment["PATH"])
        guard let executable = located.found else {
            throw RPCError(.invalidArgument, "command: no executable \"\(request.command)\" (looked \(located.looked))")
        }
        for (index, name) in request.env.enumerated() where !ShimCommand.isPassable(name) {
            throw RPCError(.invalidArgument, "env[\(index)]: \"\(name)\" cannot be passed on")
        }
        guard var config = await fleet.config(of: request.provider) else {
            throw RPCError(.notFound, "no provider \"\(request.provider)\"")
        }
        // The new shim runs as the provider's configured user, as the old one did.
        config.shim = ShimCommand(
            executable: executable, arguments: request.args, environment: ShimCommand.allowlisted(request.env, from: environment), user: config.shim.user
        )
        config.environmentAllowlist = request.env
        do {
            try await fleet.swap(request.provider, to: config)
        } catch {
            logger.error("swap refused, the old shim keeps serving", metadata: ["provider": "\(request.provider)", "why": "\(error)"])
            throw RPCError(.failedPrecondition, "swap refused, the old shim keeps serving: \(error)")
        }
        let info = await providers().first { $0.name == request.provider } ?? .init()
        return .with { $0.provider = info }
    }

    // MARK: - Status and events

    private func status() async throws -> Instancepoller_Control_V1_StatusResponse {
        let machines = try await store.machines()
        let schedule = try await store.schedule()
        let credentials = try await store.credentials()
        let revision = try await store.latestRevision()
        var byState: [String: UInt32] = [:]
        for machine in machines { byState[Self.stateName(machine.instanceStatus.state), default: 0] += 1 }
        let long = schedule.filter { $0.group == .long }.count
        let providers = await providers()
        return .with {
            $0.pid = identity.pid
            $0.version = identity.version
            $0.startedUnixNano = identity.startedAt.nanosecondsSinceEpoch
            $0.storePath = identity.storePath
            $0.runtimeDirectory = identity.runtimeDirectory
            $0.revision = revision
            $0.machines = UInt32(machines.count)
            $0.shortGroup = UInt32(schedule.count - long)
            $0.longGroup = UInt32(long)
            $0.machinesByState = byState
            $0.providers = providers
            $0.credentials = UInt32(credentials.count)
            $0.invalidCredentials = UInt32(credentials.filter { $0.invalidReason != nil }.count)
        }
    }

    /// "running", "provisioning-error", … as in the config and scenarios.
    public static func stateName(_ state: ProviderV1.InstanceState) -> String { state.label }

    private func events(_ request: Instancepoller_Control_V1_EventsRequest) async throws -> Instancepoller_Control_V1_EventsResponse {
        let limit = request.limit == 0 ? Self.eventsLimit : min(Int(request.limit), Self.eventsLimit)
        guard request.waitNano >= 0 else { throw RPCError(.invalidArgument, "wait_nano: must not be negative") }
        var found = try await store.events(after: request.afterRevision, limit: limit)
        if found.isEmpty, request.waitNano > 0 {
            // One shared watcher wakes the call; only then is the log read
            // again, for this caller's events.
            let feed = eventsFeed
            let woken = await firstWithin(.nanoseconds(request.waitNano)) {
                await feed.wait(after: request.afterRevision)
                return true
            } ?? false
            if woken, !Task.isCancelled {
                found = try await store.events(after: request.afterRevision, limit: limit)
            }
        }
        let latest = try await store.latestRevision()
        return .with {
            $0.events = found.map { event in
                .with {
                    $0.revision = event.revision
                    $0.kind = event.kind.rawValue
                    $0.source = event.source.rawValue
                    $0.machineID = event.machineID
                    $0.credential = event.credential
                    $0.atUnixNano = event.at.nanosecondsSinceEpoch
                    $0.oldValue = event.oldValue
                    $0.newValue = event.newValue
                }
            }
            $0.latestRevision = latest
        }
    }
}
