internal import Core

/// A machine as the poll engine keeps it: what scheduling and change
/// detection need, with the interfaces only as their hash (the store holds
/// them), so 100 000 machines stay small.
struct TrackedMachine: Sendable {
    let id: String
    var key: CredentialKey
    var instanceID: String
    // The one-byte fields follow the optional's tag, in its padding: a
    // fleet's worth of records stays as small as it can.
    var agentStartedAt: Timestamp?
    var life: Machine.Life
    var manual: Bool
    var agentStatus: Machine.AgentStatus
    private(set) var hasAddresses: Bool
    var instanceStatus: InstanceStatusRecord
    private(set) var interfacesHash: Int
    var pollError: String?

    init(_ machine: Machine) {
        id = machine.id
        key = machine.credentialKey
        instanceID = machine.instanceID
        life = machine.life
        manual = machine.manual
        agentStatus = machine.agentStatus
        agentStartedAt = machine.agentStartedAt
        instanceStatus = machine.instanceStatus
        interfacesHash = machine.interfaces.hashValue
        hasAddresses = !machine.addresses.isEmpty
        pollError = machine.pollError
    }

    var isProvisioned: Bool { !instanceID.isEmpty }

    /// Agentless counts as started.
    var agentStarted: Bool { agentStatus == .none || agentStatus == .started }

    /// Whether `machine` differs from this record by a change that sends it
    /// back to the short group (Juju watches life and agent start time):
    /// life, instance id, provider, credential, the manual flag, or an agent
    /// start. An agent going down or into error is not one.
    func isResetBy(_ machine: Machine) -> Bool {
        machine.life != life || machine.instanceID != instanceID || machine.credentialKey != key
            || machine.manual != manual || machine.agentStartedAt != agentStartedAt
    }

    /// Whether `interfaces` carry any address (shadow addresses count).
    static func hasAddresses(_ interfaces: [ProviderV1.NetworkInterface]) -> Bool {
        interfaces.contains { !$0.addresses.isEmpty || !$0.shadowAddresses.isEmpty }
    }

    /// Takes what a poll wrote (only once the store has it).
    mutating func remember(_ result: PollResult) {
        if let status = result.instanceStatus { instanceStatus = status }
        if let interfaces = result.interfaces {
            interfacesHash = interfaces.hashValue
            hasAddresses = Self.hasAddresses(interfaces)
        }
        pollError = result.pollError
        if result.agentError != nil { agentStatus = .error }
    }
}
