public import Core
public import Logging
internal import Foundation
internal import SwiftProtobuf
internal import Support
public import ControlAPI

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
        /// This controller's holder id among the controllers sharing a
        /// PostgreSQL store (docs/DESIGN.md §8); nil with SQLite.
        public var holder: String?

        public init(pid: Int32, version: String, startedAt: Timestamp, storePath: String, runtimeDirectory: String, holder: String? = nil) {
            self.pid = pid
            self.version = version
            self.startedAt = startedAt
            self.storePath = storePath
            self.runtimeDirectory = runtimeDirectory
            self.holder = holder
        }
    }

    let identity: Identity
    let store: any MachineStore
    let fleet: ProviderFleet
    let clock: any PollClock
    let environment: [String: String]
    /// Where a swapped-in shim runs when the request names no directory:
    /// the config file's (nil: the controller's working directory).
    let shimDirectory: String?
    let logger: Logger
    /// Wakes every waiting `Events` call from one watcher of the store.
    public let eventsFeed: EventsFeed
    /// The longest an `Events` call waits for an event, whatever it asks.
    let maxEventsWait: Duration
    /// Bytes the items of one answer may take.
    let answerBudget: Int
    /// The store's sealer of credential attributes (the same object), when
    /// a credential_key_file is configured: `ResealCredentials` reads its
    /// key file again before it reseals (docs/DESIGN.md §6.7).
    let sealer: CredentialSealer?

    /// - Parameter eventsFeed: shared by the `Events` long polls; nudge it
    ///   on this process's store changes. Default: one on `store`.
    /// - Parameter maxEventsWait: the longest an `Events` long poll waits.
    /// - Parameter answerBudget: bytes the machines or events of one answer
    ///   may take (less only in tests).
    /// - Parameter shimDirectory: where a swapped-in shim runs when the
    ///   request names no directory (the config file's).
    /// - Parameter sealer: the sealer the store was opened with, if any.
    public init(
        identity: Identity, store: any MachineStore, fleet: ProviderFleet, clock: any PollClock, environment: [String: String],
        eventsFeed: EventsFeed? = nil, maxEventsWait: Duration = .seconds(60), answerBudget: Int = defaultAnswerBudget,
        shimDirectory: String? = nil, sealer: CredentialSealer? = nil, logger: Logger
    ) {
        self.sealer = sealer
        self.shimDirectory = shimDirectory
        self.maxEventsWait = maxEventsWait
        self.answerBudget = min(answerBudget, Self.defaultAnswerBudget)
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
    /// Machines one `ListMachines` answer holds by default, and at most.
    static let defaultPageSize = 1000
    static let maxPageSize = 10_000
    /// Rows read from the store at a time while filling a page: first, and
    /// at most.
    static let firstReadChunk = 100
    static let readChunk = 1000
    /// Most machines (or ids) one `AddMachines` or `RemoveMachines` call takes.
    static let maxBatch = 10_000
    /// Bytes the items of one answer may take: the frame limit less room
    /// for the response envelope and a page token.
    public static let defaultAnswerBudget = FrameHeader.maxDataLength - 16 * 1024

    public func register(into registry: inout RPCServiceRegistry) {
        registry.register(ControlV1.status) { _, _ in try await status() }
        registry.register(ControlV1.addMachine) { request, _ in
            let machine = try await addMachine(request)
            return .with { $0.machine = machine }
        }
        registry.register(ControlV1.removeMachine) { request, _ in
            try Self.requireMachineID(request.id)
            try await store.removeMachine(id: request.id)
            logger.info("machine removed", metadata: ["machine": "\(request.id)"])
            return .init()
        }
        registry.register(ControlV1.listMachines) { request, _ in try await listMachines(request) }
        registry.register(ControlV1.addMachines) { request, _ in try await addMachines(request) }
        registry.register(ControlV1.removeMachines) { request, _ in try await removeMachines(request) }
        registry.register(ControlV1.getMachine) { request, _ in
            let (machine, entry) = try await listedMachine(request.id)
            let history = try await store.statusHistory(machineID: machine.id)
            return .with {
                $0.machine = Self.fitted(Self.wire(machine, entry), budget: answerBudget)
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
            try Self.requireMachineID(request.id)
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
        registry.register(ControlV1.removeCredential) { request, _ in try await removeCredential(request) }
        registry.register(ControlV1.validateCredential) { request, _ in try await validateCredential(request) }
        registry.register(ControlV1.resealCredentials) { _, _ in try await resealCredentials() }
        registry.register(ControlV1.listProviders) { _, _ in
            let providers = await providers()
            return .with { $0.providers = providers }
        }
        registry.register(ControlV1.swapProvider) { request, _ in try await swapProvider(request) }
        registry.register(ControlV1.events) { request, _ in try await events(request) }
    }

    // MARK: - Machines

    /// A request that names one machine must name one; whether it exists is
    /// the store's to say (NotFound).
    private static func requireMachineID(_ id: String) throws {
        guard !id.isEmpty else { throw RPCError(.invalidArgument, "id: a machine id is needed") }
    }

    /// The machine and its schedule entry, or NotFound.
    private func listedMachine(_ id: String) async throws -> (Machine, ScheduleEntry?) {
        try Self.requireMachineID(id)
        guard let listed = try await store.machines(after: "", limit: 1, filter: MachineFilter(id: id)).first else {
            throw StoreError.noMachine(id)
        }
        return (listed.machine, listed.schedule)
    }

    /// One machine: a taken id is the store's to refuse (AlreadyExists).
    private func addMachine(_ request: Instancepoller_Control_V1_AddMachineRequest) async throws -> ControlV1.Machine {
        let machine = try await checkedMachines([request], reportingTaken: false).get(field: nil)[0]
        try await store.addMachine(machine)
        logger.info("machine added", metadata: ["machine": "\(machine.id)", "provider": "\(machine.provider)"])
        return Self.wire(machine, nil)
    }

    private func addMachines(_ request: Instancepoller_Control_V1_AddMachinesRequest) async throws -> Instancepoller_Control_V1_AddMachinesResponse {
        guard !request.machines.isEmpty else { throw RPCError(.invalidArgument, "machines: no machines given") }
        guard request.machines.count <= Self.maxBatch else {
            throw RPCError(.invalidArgument, "machines: at most \(Self.maxBatch) per call (got \(request.machines.count)); send them in several calls")
        }
        // Every taken id is a problem of its own, for validate-only too; one
        // added by someone else since is the store's to refuse.
        let checked = try await checkedMachines(request.machines, reportingTaken: !request.update)
        if request.validateOnly { return .with { $0.problems = checked.problems } }
        let machines = try checked.get(field: "machines")
        let counts = try await store.importMachines(machines, update: request.update)
        logger.info("machines added", metadata: [
            "count": "\(machines.count)", "added": "\(counts.added)", "updated": "\(counts.updated)", "unchanged": "\(counts.unchanged)",
        ])
        return .with {
            $0.added = UInt32(counts.added)
            $0.updated = UInt32(counts.updated)
            $0.unchanged = UInt32(counts.unchanged)
        }
    }

    /// Requests made machines, and every problem found on the way: bad
    /// fields, an unconfigured provider, a credential the provider does not
    /// have, an id given twice, and (when `reportingTaken`) an id in use.
    private func checkedMachines(
        _ requests: [Instancepoller_Control_V1_AddMachineRequest], reportingTaken: Bool
    ) async throws -> Checked<[Machine]> {
        var checked = Checked<[Machine]>(value: [])
        let configured = await fleet.providerNames
        let known = Set(configured)
        var credentials: [String: Set<String>] = [:]
        for credential in try await store.credentials() { credentials[credential.provider, default: []].insert(credential.name) }
        var first: [String: Int] = [:]
        let now = clock.now
        for (index, request) in requests.enumerated() {
            let before = checked.problems.count
            if let problem = MachineFields.idProblem(request.id) {
                checked.add(index, "id", problem)
            } else if let earlier = first[request.id] {
                checked.add(index, "id", "\(MachineFields.quoted(request.id)) is also machines[\(earlier)]")
            } else {
                first[request.id] = index
            }
            if !known.contains(request.provider) {
                checked.add(index, "provider", "no provider \(MachineFields.quoted(request.provider)) is configured (configured: \(configured.joined(separator: ", ")))")
            }
            if let problem = MachineFields.nameProblem(request.credential, what: "credential") {
                checked.add(index, "credential", problem)
            } else if known.contains(request.provider), credentials[request.provider]?.contains(request.credential) != true {
                let names = (credentials[request.provider] ?? []).sorted()
                checked.add(index, "credential", """
                    no credential \(MachineFields.quoted(request.credential)) for provider \(MachineFields.quoted(request.provider)) \
                    (known: \(names.isEmpty ? "none" : names.joined(separator: ", ")))
                    """)
            }
            if let problem = MachineFields.instanceIDProblem(request.instanceID) { checked.add(index, "instance_id", problem) }
            let agent: Machine.AgentStatus
            switch MachineFields.agentStatus(request.agentStatus) {
            case .success(let status): agent = status
            case .failure(let problem):
                checked.add(index, "agent_status", problem.description)
                agent = .none
            }
            guard checked.problems.count == before else { continue }
            checked.value.append(Machine(
                id: request.id, provider: request.provider, credential: request.credential, instanceID: request.instanceID,
                manual: request.manual, agentStatus: agent,
                // Added with its agent started: that is its start (and the answer says so).
                agentStartedAt: agent == .started ? now : nil
            ))
        }
        if reportingTaken {
            let existing = try await store.existingMachineIDs(checked.value.map(\.id))
            for (index, request) in requests.enumerated() where existing.contains(request.id) && first[request.id] == index {
                checked.add(index, "id", "machine \(MachineFields.quoted(request.id)) already exists", code: .alreadyExists)
            }
        }
        return checked
    }

    private func removeMachines(_ request: Instancepoller_Control_V1_RemoveMachinesRequest) async throws -> Instancepoller_Control_V1_RemoveMachinesResponse {
        guard !request.ids.isEmpty else { throw RPCError(.invalidArgument, "ids: no machine ids given") }
        guard request.ids.count <= Self.maxBatch else {
            throw RPCError(.invalidArgument, "ids: at most \(Self.maxBatch) per call (got \(request.ids.count)); send them in several calls")
        }
        var checked = Checked<[String]>(value: [])
        var first: [String: Int] = [:]
        for (index, id) in request.ids.enumerated() {
            if let problem = MachineFields.idProblem(id) {
                checked.add(index, "id", problem)
            } else if let earlier = first[id] {
                checked.add(index, "id", "\(MachineFields.quoted(id)) is also ids[\(earlier)]")
            } else {
                first[id] = index
                checked.value.append(id)
            }
        }
        let existing = try await store.existingMachineIDs(checked.value)
        for (index, id) in request.ids.enumerated() where first[id] == index && !existing.contains(id) {
            checked.add(index, "id", "no machine \(MachineFields.quoted(id))", code: .notFound)
        }
        if request.validateOnly { return .with { $0.problems = checked.problems } }
        let ids = try checked.get(field: "ids")
        try await store.removeMachines(ids: ids)
        logger.info("machines removed", metadata: ["count": "\(ids.count)"])
        return .with { $0.removed = UInt32(ids.count) }
    }

    /// A value made from a request's items, and what was wrong with them.
    struct Checked<Value> {
        var value: Value
        var problems: [ControlV1.MachineProblem] = []
        /// The code of the first problem.
        var code: RPCStatusCode = .invalidArgument

        mutating func add(_ index: Int, _ field: String, _ problem: String, code: RPCStatusCode = .invalidArgument) {
            if problems.isEmpty { self.code = code }
            problems.append(.with {
                $0.index = UInt32(index)
                $0.field = field
                $0.problem = problem
            })
        }

        /// The value, or the first problem as the call's error: "machines[3].id: …
        /// (and 2 more problems)", or without the list's `field` "id: …".
        func get(field: String?) throws -> Value {
            guard let first = problems.first else { return value }
            let more = problems.count > 1 ? " (and \(problems.count - 1) more problem\(problems.count > 2 ? "s" : ""))" : ""
            guard let field else { throw RPCError(code, "\(first.field): \(first.problem)") }
            throw RPCError(code, "\(field)[\(first.index)].\(first.field): \(first.problem)\(more)")
        }
    }

    private func knownProvider(_ name: String) async throws {
        let configured = await fleet.providerNames
        guard configured.contains(name) else {
            throw RPCError(.invalidArgument, "provider: no provider \"\(name)\" is configured (configured: \(configured.joined(separator: ", ")))")
        }
    }

    /// A named agent status (empty is a mistake here, not "none").
    static func agentStatus(_ text: String, field: String) throws -> Machine.AgentStatus {
        switch MachineFields.agentStatus(text) {
        case .success(let status) where !text.isEmpty: return status
        case .success: throw RPCError(.invalidArgument, "\(field): an agent status is needed (none, pending, started, error or down)")
        case .failure(let problem): throw RPCError(.invalidArgument, "\(field): \(problem)")
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
        if let problem = MachineFields.nameProblem(request.name, what: "credential") { throw RPCError(.invalidArgument, "name: \(problem)") }
        guard !request.authType.isEmpty else { throw RPCError(.invalidArgument, "auth_type: an auth type is needed, e.g. access-key") }
        guard !request.attributes.isEmpty else { throw RPCError(.invalidArgument, "attributes: a credential needs at least one attribute") }
        if request.expiresUnixNano != 0, !request.allowExpired {
            let expiry = Timestamp(nanosecondsSinceEpoch: request.expiresUnixNano)
            if expiry <= clock.now {
                throw RPCError(.invalidArgument, "expires_unix_nano: \(expiry.rfc3339) is in the past; set allow_expired to set it anyway")
            }
        }
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

    /// Removes a credential; while machines name it only with `force`
    /// (they stay, and pause: the gate finds no credential).
    private func removeCredential(_ request: Instancepoller_Control_V1_RemoveCredentialRequest) async throws
        -> Instancepoller_Control_V1_RemoveCredentialResponse
    {
        if let problem = MachineFields.nameProblem(request.provider, what: "provider") { throw RPCError(.invalidArgument, "provider: \(problem)") }
        if let problem = MachineFields.nameProblem(request.name, what: "credential") { throw RPCError(.invalidArgument, "name: \(problem)") }
        let label = "\(request.provider)/\(request.name)"
        let users = try await store.credentialUse(provider: request.provider)[request.name, default: 0]
        if users > 0, !request.force {
            // The rule is for a credential there is: one that is gone is
            // NotFound, whoever still names it.
            guard try await store.credential(provider: request.provider, name: request.name) != nil else {
                throw StoreError.noCredential(provider: request.provider, name: request.name)
            }
            throw RPCError(
                .failedPrecondition,
                "credential \(label) is used by \(users) machine\(users == 1 ? "" : "s"); remove \(users == 1 ? "it" : "them") first or pass --force")
        }
        // NotFound from the store when there is no such credential.
        try await store.removeCredential(provider: request.provider, name: request.name)
        if users > 0 {
            logger.warning("credential removed; its machines are not polled until it is set again", metadata: ["credential": "\(label)", "machines": "\(users)"])
        } else {
            logger.info("credential removed", metadata: ["credential": "\(label)"])
        }
        return .with { $0.machines = UInt32(clamping: users) }
    }

    /// Asks the provider's shim now; a credential marked invalid that it
    /// finds valid has its mark cleared, and its paused machines are polled
    /// again at once.
    private func validateCredential(_ request: Instancepoller_Control_V1_ValidateCredentialRequest) async throws
        -> Instancepoller_Control_V1_ValidateCredentialResponse
    {
        guard let stored = try await store.credential(provider: request.provider, name: request.name) else {
            throw StoreError.noCredential(provider: request.provider, name: request.name)
        }
        guard let endpoint = fleet.endpoint(for: request.provider) else {
            throw RPCError(.failedPrecondition, "provider \(request.provider) is not configured")
        }
        // A shim that is down is Unavailable (ShimUnavailable says so).
        let answer = try await endpoint.access.validateCredential(stored.wire, cloud: endpoint.cloud)
        if answer.valid, stored.invalidReason != nil {
            if try await store.clearCredentialInvalid(provider: request.provider, name: request.name, source: .external) {
                logger.info("credential valid again", metadata: ["credential": "\(request.provider)/\(request.name)"])
            }
        }
        return .with {
            $0.valid = answer.valid
            $0.reason = answer.reason
        }
    }

    /// Reads the key file again, then seals every stored credential with
    /// its first key (docs/DESIGN.md §6.7). Refused without a key file.
    private func resealCredentials() async throws -> Instancepoller_Control_V1_ResealCredentialsResponse {
        guard let sealer else {
            throw RPCError(.failedPrecondition, "no credential_key_file is configured: credentials are not sealed, so there is nothing to reseal")
        }
        do {
            try sealer.reload()
        } catch {
            // The problem names the file (and the line), never a key.
            throw RPCError(.failedPrecondition, "\(error); nothing was resealed")
        }
        let keyID = sealer.currentKeyID
        let resealed = try await store.resealCredentials()
        logger.info("credentials resealed", metadata: ["resealed": "\(resealed)", "key": "\(keyID)"])
        return .with {
            $0.resealed = UInt32(clamping: resealed)
            $0.keyID = keyID
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

    /// A provider as `ListProviders` and `Status` send it.
    public static func wire(_ config: ProviderConfig, _ snapshot: ProviderSupervisor.Snapshot) -> ControlV1.ProviderInfo {
        .with {
            $0.name = config.name
            $0.cloudType = config.cloud.type
            $0.command = snapshot.command.executable
            $0.args = snapshot.command.arguments
            $0.state = snapshot.state.rawValue
            $0.pid = snapshot.pid ?? 0
            $0.restarts = UInt32(clamping: snapshot.restarts)
            $0.lastProblem = snapshot.lastProblem ?? ""
            $0.lastProblemUnixNano = snapshot.lastProblemAt?.nanosecondsSinceEpoch ?? 0
            $0.nextStartUnixNano = snapshot.nextStart?.nanosecondsSinceEpoch ?? 0
            $0.lastRefusedSwap = snapshot.lastRefusedSwap ?? ""
            $0.lastRefusedSwapUnixNano = snapshot.lastRefusedSwapAt?.nanosecondsSinceEpoch ?? 0
            $0.shimName = snapshot.shimName
            $0.shimVersion = snapshot.shimVersion
        }
    }

    private func swapProvider(_ request: Instancepoller_Control_V1_SwapProviderRequest) async throws -> Instancepoller_Control_V1_SwapProviderResponse {
        try await knownProvider(request.provider)
        guard !request.command.isEmpty else { throw RPCError(.invalidArgument, "command: the new shim's command is needed") }
        let directory = try swapDirectory(request.workingDirectory)
        let located = ShimCommand.locate(request.command, base: directory, path: environment["PATH"])
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
            executable: executable, arguments: request.args, environment: ShimCommand.allowlisted(request.env, from: environment), user: config.shim.user,
            workingDirectory: directory
        )
        config.environmentAllowlist = request.env
        do {
            try await fleet.swap(request.provider, to: config)
        } catch {
            logger.error("swap refused, the old shim keeps serving", metadata: ["provider": "\(request.provider)", "why": "\(error)"])
            // FailedPrecondition: the refusal (a ShimStartError) says so.
            var refusal = RPCError(from: error)
            refusal.message = "swap refused, the old shim keeps serving: \(refusal.message)"
            throw refusal
        }
        let info = await providers().first { $0.name == request.provider } ?? .init()
        return .with { $0.provider = info }
    }

    /// Where a swapped-in shim runs and its command is found: the
    /// request's directory (the CLI sends its own), else the config file's.
    private func swapDirectory(_ asked: String) throws -> String {
        guard !asked.isEmpty else { return shimDirectory ?? FileManager.default.currentDirectoryPath }
        guard asked.hasPrefix("/") else {
            throw RPCError(.invalidArgument, "working_directory: \(TextEscaping.quoted(asked)) is not an absolute path")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: asked, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw RPCError(.invalidArgument, "working_directory: no directory \(TextEscaping.quoted(asked))")
        }
        return URL(fileURLWithPath: asked).standardizedFileURL.path
    }

    // MARK: - Status and events

    private func status() async throws -> Instancepoller_Control_V1_StatusResponse {
        let summary = try await store.summary(now: clock.now)
        let credentials = try await store.credentials()
        let revision = try await store.latestRevision()
        let providers = await providers()
        var controllers: [ControlV1.ControllerInfo] = []
        if let shared = store as? any LeaseStore {
            controllers = Self.controllers(try await shared.controllers(), holding: try await shared.leases())
        }
        return .with {
            $0.pid = identity.pid
            $0.version = identity.version
            $0.startedUnixNano = identity.startedAt.nanosecondsSinceEpoch
            $0.storePath = identity.storePath
            $0.runtimeDirectory = identity.runtimeDirectory
            $0.revision = revision
            $0.machines = UInt32(clamping: summary.machines)
            $0.shortGroup = UInt32(clamping: summary.shortGroup)
            $0.longGroup = UInt32(clamping: summary.longGroup)
            $0.machinesByState = summary.byState.mapValues { UInt32(clamping: $0) }
            $0.pollErrors = UInt32(clamping: summary.pollErrors)
            $0.overdue = UInt32(clamping: summary.overdue)
            $0.notFound = UInt32(clamping: summary.notFound)
            $0.providers = providers
            $0.credentials = UInt32(credentials.count)
            $0.invalidCredentials = UInt32(credentials.filter { $0.invalidReason != nil }.count)
            $0.controllers = controllers
            $0.holder = identity.holder ?? ""
        }
    }

    /// The live controllers, by holder, each with the pairs it holds
    /// (docs/DESIGN.md §8). A lease is held while it expires after the
    /// newest renewal among `records`: the database's clock, on which both
    /// were written, never this machine's.
    static func controllers(_ records: [ControllerRecord], holding leases: [LeaseRecord]) -> [ControlV1.ControllerInfo] {
        guard let now = records.map(\.lastRenewal).max() else { return [] }
        var pairs: [String: [String]] = [:]
        for lease in leases where lease.expiresAt > now { pairs[lease.holder, default: []].append(lease.key.description) }
        return records.sorted { $0.identity.holder < $1.identity.holder }.map { record in
            .with {
                $0.holder = record.identity.holder
                $0.host = record.identity.host
                $0.pid = record.identity.pid
                $0.version = record.identity.version
                $0.lastRenewalUnixNano = record.lastRenewal.nanosecondsSinceEpoch
                $0.expiresUnixNano = record.expiresAt.nanosecondsSinceEpoch
                $0.pairs = (pairs[record.identity.holder] ?? []).sorted()
            }
        }
    }

    /// The rows `instancepoller status` prints for the controllers sharing
    /// the store (here, not in the CLI, so that tests reach it): a mark
    /// (`*` for the controller that answered), holder, host, pid, how long
    /// ago it renewed as of `now`, and the pairs it holds.
    public static func controllerRows(_ status: Instancepoller_Control_V1_StatusResponse, now: Timestamp) -> [[String]] {
        status.controllers.map { controller in
            let renewed = now - Timestamp(nanosecondsSinceEpoch: controller.lastRenewalUnixNano)
            let count = "\(controller.pairs.count) pair\(controller.pairs.count == 1 ? "" : "s")"
            return [
                controller.holder == status.holder ? "*" : " ", controller.holder, controller.host, "pid \(controller.pid)",
                "renewed \(age(renewed)) ago", controller.pairs.isEmpty ? count : "\(count): \(controller.pairs.joined(separator: ", "))",
            ]
        }
    }

    /// "4s", "3m12s", "2h05m": an age in whole seconds (a clock behind the
    /// database's shows 0s, not a negative age).
    static func age(_ duration: Duration) -> String {
        let seconds = max(0, duration.components.seconds)
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3600 { return "\(seconds / 60)m\(String(format: "%02d", seconds % 60))s" }
        return "\(seconds / 3600)h\(String(format: "%02d", seconds / 60 % 60))m"
    }

    /// "running", "provisioning-error", … as in the config and scenarios.
    public static func stateName(_ state: ProviderV1.InstanceState) -> String { state.label }

    private func events(_ request: Instancepoller_Control_V1_EventsRequest) async throws -> Instancepoller_Control_V1_EventsResponse {
        let asked = request.pageSize != 0 ? request.pageSize : request.limit
        let limit = asked == 0 ? Self.eventsLimit : min(Int(asked), Self.eventsLimit)
        guard request.waitNano >= 0 else { throw RPCError(.invalidArgument, "wait_nano: must not be negative") }
        var after = request.afterRevision
        if !request.pageToken.isEmpty {
            guard let cursor = PageToken.cursor(of: request.pageToken, .events, scope: ""), cursor.count == 8 else {
                throw Self.badToken
            }
            after = cursor.enumerated().reduce(Int64(0)) { $0 | Int64($1.element) << ($1.offset * 8) }
        }
        // One more than a page: whether more follow.
        var found = try await store.events(after: after, limit: limit + 1)
        if found.isEmpty, request.waitNano > 0 {
            // One shared watcher wakes the call; only then is the log read
            // again, for this caller's events.
            let (feed, revision) = (eventsFeed, after)
            let woken = await firstWithin(min(.nanoseconds(request.waitNano), maxEventsWait)) {
                await feed.wait(after: revision)
                return true
            } ?? false
            if woken, !Task.isCancelled {
                found = try await store.events(after: after, limit: limit + 1)
            }
        }
        let latest = try await store.latestRevision()
        var response = Instancepoller_Control_V1_EventsResponse()
        response.latestRevision = latest
        var page = Page(budget: answerBudget)
        for event in found.prefix(limit) {
            var wire = Self.wire(event)
            var bytes = Self.itemSize(wire)
            if bytes > page.budget {
                wire = Self.fitted(wire)
                bytes = Self.itemSize(wire)
            }
            guard page.take(bytes) else { break }
            response.events.append(wire)
        }
        if let last = response.events.last, response.events.count < found.count {
            response.nextPageToken = PageToken.issue(.events, scope: "", cursor: (0..<8).map { UInt8(truncatingIfNeeded: last.revision >> ($0 * 8)) })
        }
        return response
    }

    static func wire(_ event: MachineEvent) -> ControlV1.Event {
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

    // MARK: - Listing

    private func listMachines(_ request: Instancepoller_Control_V1_ListMachinesRequest) async throws -> Instancepoller_Control_V1_ListMachinesResponse {
        let filter = try Self.filter(request)
        let scope = Self.scope(request)
        var after = ""
        if !request.pageToken.isEmpty {
            guard let cursor = PageToken.cursor(of: request.pageToken, .machines, scope: scope), let id = String(validating: cursor, as: UTF8.self) else {
                throw Self.badToken
            }
            after = id
        }
        let size = request.pageSize == 0 ? Self.defaultPageSize : min(Int(request.pageSize), Self.maxPageSize)
        var response = Instancepoller_Control_V1_ListMachinesResponse()
        var page = Page(budget: answerBudget)
        // Read in chunks, so that a page cut early by bytes reads little
        // more than it holds; one row past a chunk says whether more follow.
        var more = false
        var chunk = Self.firstReadChunk
        filling: while response.machines.count < size {
            let want = min(size - response.machines.count, chunk)
            let wires: [ControlV1.Machine]
            if request.idsOnly {
                wires = try await store.machineIDs(after: after, limit: want + 1, filter: filter).map { id in .with { $0.id = id } }
            } else {
                wires = try await store.machines(after: after, limit: want + 1, filter: filter).map { Self.wire($0.machine, $0.schedule) }
            }
            more = wires.count > want
            for var wire in wires.prefix(want) {
                var bytes = Self.itemSize(wire)
                if bytes > page.budget {
                    wire = Self.fitted(wire, budget: page.budget)
                    bytes = Self.itemSize(wire)
                }
                guard page.take(bytes) else {
                    more = true
                    break filling
                }
                response.machines.append(wire)
                after = wire.id
            }
            if !more { break }
            // As many as the bytes left would hold at the sizes seen so far.
            let average = max(1, page.used / max(1, response.machines.count))
            chunk = min(Self.readChunk, max(1, (page.budget - page.used) / average + 1))
        }
        if more, let last = response.machines.last {
            response.nextPageToken = PageToken.issue(.machines, scope: scope, cursor: Array(last.id.utf8))
        }
        return response
    }

    static let badToken = RPCError(
        .invalidArgument,
        "page_token: not a token this controller issued for this listing (it may have restarted, or the filters changed); list again from the start"
    )

    /// The request's filters, checked.
    static func filter(_ request: Instancepoller_Control_V1_ListMachinesRequest) throws -> MachineFilter {
        var filter = MachineFilter(withError: request.withError)
        if !request.provider.isEmpty { filter.provider = request.provider }
        if !request.credential.isEmpty { filter.credential = request.credential }
        if !request.state.isEmpty {
            if request.state == InstanceStatusRecord.notFoundRawStatus {
                filter.state = .notFound
            } else if let state = ProviderV1.InstanceState.allCases.first(where: { $0.label == request.state }) {
                filter.state = .state(state)
            } else {
                let known = ProviderV1.InstanceState.allCases.map(\.label).filter { $0 != "unspecified" } + [InstanceStatusRecord.notFoundRawStatus]
                throw RPCError(.invalidArgument, "state: unknown state \(MachineFields.quoted(request.state)) (expected one of: \(known.joined(separator: ", ")))")
            }
        }
        switch request.group {
        case "": break
        case "short": filter.group = .short
        case "long": filter.group = .long
        case "none": filter.group = .untracked
        default: throw RPCError(.invalidArgument, "group: unknown poll group \(MachineFields.quoted(request.group)) (expected short, long or none)")
        }
        if !request.agentStatus.isEmpty { filter.agentStatus = try agentStatus(request.agentStatus, field: "agent_status") }
        return filter
    }

    /// The filters in one canonical spelling: a page token is sealed to them.
    static func scope(_ request: Instancepoller_Control_V1_ListMachinesRequest) -> String {
        [request.provider, request.credential, request.state, request.group, request.agentStatus, "\(request.withError)", "\(request.idsOnly)"]
            .map { "\($0.utf8.count):\($0)" }.joined()
    }

    /// The bytes an answer has left for its items.
    struct Page {
        var budget: Int
        private(set) var used = 0

        init(budget: Int) { self.budget = budget }

        /// Counts an item of `size` bytes in, or false when it does not fit.
        mutating func take(_ size: Int) -> Bool {
            guard used + size <= budget else { return false }
            used += size
            return true
        }
    }

    /// What `message` adds to an answer as an element of a repeated field:
    /// tag, length and the message.
    static func itemSize(_ message: some SwiftProtobuf.Message) -> Int {
        let length = (try? message.serializedBytes() as [UInt8])?.count ?? Int.max / 2
        var varint = 1
        while length >> (7 * varint) != 0 { varint += 1 }
        return 1 + varint + length
    }

    /// A machine cut to fit one answer: without its interfaces (said so),
    /// and with its texts shortened if that is not enough.
    static func fitted(_ machine: ControlV1.Machine, budget: Int) -> ControlV1.Machine {
        var fitted = machine
        if itemSize(fitted) > budget {
            fitted.interfaces = []
            fitted.interfacesOmitted = true
        }
        if itemSize(fitted) > budget {
            fitted.pollError = shortened(fitted.pollError)
            fitted.agentMessage = shortened(fitted.agentMessage)
            fitted.status.message = shortened(fitted.status.message)
            fitted.status.rawStatus = shortened(fitted.status.rawStatus)
            fitted.instanceID = shortened(fitted.instanceID)
        }
        return fitted
    }

    /// An event cut to fit one answer: its values shortened.
    static func fitted(_ event: ControlV1.Event) -> ControlV1.Event {
        var fitted = event
        fitted.oldValue = shortened(fitted.oldValue)
        fitted.newValue = shortened(fitted.newValue)
        return fitted
    }

    private static func shortened(_ text: String) -> String {
        text.utf8.count <= 4096 ? text : String(decoding: text.utf8.prefix(4096), as: UTF8.self) + "…"
    }
}
