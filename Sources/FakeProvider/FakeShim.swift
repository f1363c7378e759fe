internal import Core
public import ProviderShim
public import Support

/// The `fake` backend as a whole shim process: scenario, cloud, backend and
/// the FakeCloud control service, under the shim contract. One entry point
/// for `provider-shim fake` and the demo's `instancepoller _fake-shim`.
public enum FakeShim {
    /// Loads the scenario at `scenarioPath` and serves it until told to stop;
    /// returns the exit status. A scenario that cannot be used is one line on
    /// stderr, `COMMAND: cannot read scenario /abs/path: …` or
    /// `COMMAND: /abs/path:3:5: instances[0]: …`, and exit status 2.
    public static func main(
        command: String, scenarioPath: String, clock: any FakeClock, callLog: String? = nil, options: ShimProcess.Options
    ) async -> Int32 {
        MallocTuning.tune(for: .largeFrames)
        let scenario: FakeScenario
        do {
            scenario = try FakeScenario.load(path: scenarioPath)
        } catch {
            ShimProcess.printError("\(command): \(message(error))")
            return ShimProcess.ExitStatus.usage
        }
        var log: FakeCallLog?
        if let callLog {
            do {
                log = try FakeCallLog(path: callLog)
            } catch {
                ShimProcess.printError("\(command): \(error)")
                return ShimProcess.ExitStatus.usage
            }
        }
        return await run(scenario: scenario, clock: clock, callLog: log, options: options)
    }

    /// Serves `scenario` until told to stop; returns the exit status.
    public static func run(scenario: FakeScenario, clock: any FakeClock, callLog: FakeCallLog? = nil, options: ShimProcess.Options) async -> Int32 {
        let cloud = FakeCloud(scenario: scenario, clock: clock)
        let backend = FakeBackend(cloud: cloud, logger: options.logger, callLog: callLog)
        return await ShimProcess.run(backend: backend, options: options) { registry in
            FakeCloudControl.register(cloud, into: &registry)
        }
    }

    /// A scenario that cannot be used, naming it by its absolute path (the
    /// shim may run far from where the operator is):
    /// `cannot read scenario /etc/ip/scenario.yaml: No such file or directory`,
    /// or `/etc/ip/scenario.yaml:3:5: instances[0]: …`.
    public static func message(_ error: ScenarioError) -> String {
        if error.line == 0, error.problem.hasPrefix(YAMLReader.cannotOpenProblem) {
            return "cannot read scenario \(error.file): \(error.problem.dropFirst(YAMLReader.cannotOpenProblem.count))"
        }
        return "\(error)"
    }
}
