public import Core
internal import Foundation

/// The control API, `instancepoller.control.v1.Controller`
/// (proto/instancepoller/control/v1/control.proto): what the CLI calls on a
/// running controller, over `control.sock` in its runtime directory.
public enum ControlV1 {
    /// The ttrpc service name. Part of the contract: other programs call it.
    public static let serviceName = "instancepoller.control.v1.Controller"
    /// The socket's file name in the runtime directory.
    public static let socketName = "control.sock"

    public typealias Machine = Instancepoller_Control_V1_Machine
    public typealias Credential = Instancepoller_Control_V1_Credential
    public typealias ProviderInfo = Instancepoller_Control_V1_ProviderInfo
    public typealias Event = Instancepoller_Control_V1_Event
    public typealias StatusChange = Instancepoller_Control_V1_StatusChange
    public typealias MachineProblem = Instancepoller_Control_V1_MachineProblem
    public typealias ControllerInfo = Instancepoller_Control_V1_ControllerInfo

    public static let status = MethodDescriptor<Instancepoller_Control_V1_StatusRequest, Instancepoller_Control_V1_StatusResponse>(
        service: serviceName, method: "Status")
    public static let addMachine = MethodDescriptor<Instancepoller_Control_V1_AddMachineRequest, Instancepoller_Control_V1_AddMachineResponse>(
        service: serviceName, method: "AddMachine")
    public static let removeMachine = MethodDescriptor<Instancepoller_Control_V1_RemoveMachineRequest, Instancepoller_Control_V1_RemoveMachineResponse>(
        service: serviceName, method: "RemoveMachine")
    public static let listMachines = MethodDescriptor<Instancepoller_Control_V1_ListMachinesRequest, Instancepoller_Control_V1_ListMachinesResponse>(
        service: serviceName, method: "ListMachines")
    public static let addMachines = MethodDescriptor<Instancepoller_Control_V1_AddMachinesRequest, Instancepoller_Control_V1_AddMachinesResponse>(
        service: serviceName, method: "AddMachines")
    public static let removeMachines = MethodDescriptor<Instancepoller_Control_V1_RemoveMachinesRequest, Instancepoller_Control_V1_RemoveMachinesResponse>(
        service: serviceName, method: "RemoveMachines")
    public static let getMachine = MethodDescriptor<Instancepoller_Control_V1_GetMachineRequest, Instancepoller_Control_V1_GetMachineResponse>(
        service: serviceName, method: "GetMachine")
    public static let setAgentStatus = MethodDescriptor<Instancepoller_Control_V1_SetAgentStatusRequest, Instancepoller_Control_V1_SetAgentStatusResponse>(
        service: serviceName, method: "SetAgentStatus")
    public static let setCredential = MethodDescriptor<Instancepoller_Control_V1_SetCredentialRequest, Instancepoller_Control_V1_SetCredentialResponse>(
        service: serviceName, method: "SetCredential")
    public static let removeCredential = MethodDescriptor<Instancepoller_Control_V1_RemoveCredentialRequest, Instancepoller_Control_V1_RemoveCredentialResponse>(
        service: serviceName, method: "RemoveCredential")
    public static let listCredentials = MethodDescriptor<Instancepoller_Control_V1_ListCredentialsRequest, Instancepoller_Control_V1_ListCredentialsResponse>(
        service: serviceName, method: "ListCredentials")
    public static let validateCredential = MethodDescriptor<Instancepoller_Control_V1_ValidateCredentialRequest, Instancepoller_Control_V1_ValidateCredentialResponse>(
        service: serviceName, method: "ValidateCredential")
    public static let listProviders = MethodDescriptor<Instancepoller_Control_V1_ListProvidersRequest, Instancepoller_Control_V1_ListProvidersResponse>(
        service: serviceName, method: "ListProviders")
    public static let swapProvider = MethodDescriptor<Instancepoller_Control_V1_SwapProviderRequest, Instancepoller_Control_V1_SwapProviderResponse>(
        service: serviceName, method: "SwapProvider")
    public static let events = MethodDescriptor<Instancepoller_Control_V1_EventsRequest, Instancepoller_Control_V1_EventsResponse>(
        service: serviceName, method: "Events")
    public static let resealCredentials = MethodDescriptor<Instancepoller_Control_V1_ResealCredentialsRequest, Instancepoller_Control_V1_ResealCredentialsResponse>(
        service: serviceName, method: "ResealCredentials")
}
