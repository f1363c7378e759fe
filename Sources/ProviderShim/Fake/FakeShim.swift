internal import Core

/// The `fake` backend as a whole shim process: scenario, cloud, backend and
/// the FakeCloud control service, under the shim contract.
public enum FakeShim {
    /// Serves `scenario` until told to stop; returns the exit status.
    public static func run(scenario: FakeScenario, clock: any FakeClock, options: ShimProcess.Options) async -> Int32 {
        let cloud = FakeCloud(scenario: scenario, clock: clock)
        let backend = FakeBackend(cloud: cloud, logger: options.logger)
        return await ShimProcess.run(backend: backend, options: options) { registry in
            FakeCloudControl.register(cloud, into: &registry)
        }
    }
}
