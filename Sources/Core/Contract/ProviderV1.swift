/// The provider contract, `instancepoller.provider.v1.Provider`
/// (proto/instancepoller/provider/v1/provider.proto): short names for its
/// messages and a descriptor per method, shared by the controller's client
/// and the shim SDK's server.
public enum ProviderV1 {
    /// The ttrpc service name. Part of the contract: other programs call it.
    public static let serviceName = "instancepoller.provider.v1.Provider"
    /// Protocol versions this build speaks, offered in the handshake.
    public static let protocolVersions: [UInt32] = [1]

    public typealias HandshakeRequest = Instancepoller_Provider_V1_HandshakeRequest
    public typealias HandshakeResponse = Instancepoller_Provider_V1_HandshakeResponse
    public typealias Capabilities = Instancepoller_Provider_V1_Capabilities
    public typealias HealthRequest = Instancepoller_Provider_V1_HealthRequest
    public typealias HealthResponse = Instancepoller_Provider_V1_HealthResponse
    public typealias CloudSpec = Instancepoller_Provider_V1_CloudSpec
    public typealias Credential = Instancepoller_Provider_V1_Credential
    public typealias ValidateCredentialRequest = Instancepoller_Provider_V1_ValidateCredentialRequest
    public typealias ValidateCredentialResponse = Instancepoller_Provider_V1_ValidateCredentialResponse
    public typealias InstanceState = Instancepoller_Provider_V1_InstanceState
    public typealias InstanceStatus = Instancepoller_Provider_V1_InstanceStatus
    public typealias InstancesRequest = Instancepoller_Provider_V1_InstancesRequest
    public typealias InstanceResult = Instancepoller_Provider_V1_InstanceResult
    public typealias InstancesResponse = Instancepoller_Provider_V1_InstancesResponse
    public typealias AddressType = Instancepoller_Provider_V1_AddressType
    public typealias AddressScope = Instancepoller_Provider_V1_AddressScope
    public typealias Address = Instancepoller_Provider_V1_Address
    public typealias NetworkInterface = Instancepoller_Provider_V1_NetworkInterface
    public typealias NetworkInterfacesRequest = Instancepoller_Provider_V1_NetworkInterfacesRequest
    public typealias InstanceInterfaces = Instancepoller_Provider_V1_InstanceInterfaces
    public typealias NetworkInterfacesResponse = Instancepoller_Provider_V1_NetworkInterfacesResponse
    public typealias ShutdownRequest = Instancepoller_Provider_V1_ShutdownRequest
    public typealias ShutdownResponse = Instancepoller_Provider_V1_ShutdownResponse

    public static let handshake = MethodDescriptor<HandshakeRequest, HandshakeResponse>(
        service: serviceName, method: "Handshake")
    public static let health = MethodDescriptor<HealthRequest, HealthResponse>(
        service: serviceName, method: "Health")
    public static let validateCredential = MethodDescriptor<ValidateCredentialRequest, ValidateCredentialResponse>(
        service: serviceName, method: "ValidateCredential")
    public static let instances = MethodDescriptor<InstancesRequest, InstancesResponse>(
        service: serviceName, method: "Instances")
    public static let networkInterfaces = MethodDescriptor<NetworkInterfacesRequest, NetworkInterfacesResponse>(
        service: serviceName, method: "NetworkInterfaces")
    public static let shutdown = MethodDescriptor<ShutdownRequest, ShutdownResponse>(
        service: serviceName, method: "Shutdown")

    /// The six method names, in contract order.
    public static let methodNames = ["Handshake", "Health", "ValidateCredential", "Instances", "NetworkInterfaces", "Shutdown"]
}
