public import Core
internal import SwiftProtobuf

/// The control service `instancepoller.fake.v1.FakeCloud`, served on the
/// fake shim's socket next to the provider contract.
public enum FakeCloudControl {
    public static let serviceName = "instancepoller.fake.v1.FakeCloud"

    public static let setInstance = MethodDescriptor<Instancepoller_Fake_V1_SetInstanceRequest, Instancepoller_Fake_V1_SetInstanceResponse>(
        service: serviceName, method: "SetInstance")
    public static let removeInstance = MethodDescriptor<Instancepoller_Fake_V1_RemoveInstanceRequest, Instancepoller_Fake_V1_RemoveInstanceResponse>(
        service: serviceName, method: "RemoveInstance")
    public static let injectFault = MethodDescriptor<Instancepoller_Fake_V1_InjectFaultRequest, Instancepoller_Fake_V1_InjectFaultResponse>(
        service: serviceName, method: "InjectFault")
    public static let clearFaults = MethodDescriptor<Instancepoller_Fake_V1_ClearFaultsRequest, Instancepoller_Fake_V1_ClearFaultsResponse>(
        service: serviceName, method: "ClearFaults")
    public static let getCalls = MethodDescriptor<Instancepoller_Fake_V1_GetCallsRequest, Instancepoller_Fake_V1_GetCallsResponse>(
        service: serviceName, method: "GetCalls")
    public static let advanceClock = MethodDescriptor<Instancepoller_Fake_V1_AdvanceClockRequest, Instancepoller_Fake_V1_AdvanceClockResponse>(
        service: serviceName, method: "AdvanceClock")

    /// Serves control of `cloud` in `registry`.
    public static func register(_ cloud: FakeCloud, into registry: inout RPCServiceRegistry) {
        registry.register(setInstance) { request, _ in
            guard !request.instance.id.isEmpty else { throw RPCError(.invalidArgument, "SetInstance needs an instance id") }
            cloud.setInstance(request.instance)
            return .init()
        }
        registry.register(removeInstance) { request, _ in
            .with { $0.removed = cloud.removeInstance(request.id) }
        }
        registry.register(injectFault) { request, _ in
            guard request.fault.kind != .unspecified else { throw RPCError(.invalidArgument, "InjectFault needs a fault kind") }
            for method in request.fault.methods where !ProviderV1.methodNames.contains(method) {
                throw RPCError(.invalidArgument, "unknown method \"\(method)\" in fault")
            }
            return .with { $0.faultID = cloud.inject(request.fault) }
        }
        registry.register(clearFaults) { request, _ in
            .with { $0.cleared = UInt32(cloud.clearFaults(request.faultIds)) }
        }
        registry.register(getCalls) { request, _ in
            let (counts, calls) = cloud.calls(reset: request.reset)
            return .with {
                $0.counts = counts.sorted { $0.key < $1.key }.map { entry in
                    .with {
                        $0.method = entry.key
                        $0.count = entry.value
                    }
                }
                $0.calls = calls
            }
        }
        registry.register(advanceClock) { request, _ in
            guard let manual = cloud.clock as? ManualFakeClock else {
                throw RPCError(.failedPrecondition, "the fake runs on the wall clock; start it with --manual-clock to move time")
            }
            return .with { $0.nowNano = manual.advance(by: .nanoseconds(request.byNano)).totalNanoseconds }
        }
    }
}
