import Foundation

/// The two ways the fake shim keeps a (provider, credential) pair paused for
/// a long while: the controller then has nothing to do but wait, so its CPU
/// should stay near zero.
enum StressFault: String, CaseIterable {
    /// Every Instances call answers ResourceExhausted with retry-after 60 s,
    /// from the start: the pair pauses for 60 s at a time.
    case throttle
    /// Every shim process exits on its first Handshake (crash faults count per
    /// process): the supervisor restarts it with its default backoff, 1 s
    /// doubling to 30 s.
    case crashLoop = "crash-loop"

    var scenarioFault: String {
        switch self {
        case .throttle: "{kind: throttle, methods: [Instances], retry_after: 60s}"
        case .crashLoop: "{kind: crash, methods: [Handshake], after_calls: 0}"
        }
    }

    /// What the controller logs when the pause begins: the poll engine's
    /// notice on a throttled call, ProviderSupervisor's warning before each
    /// backoff sleep.
    var message: String {
        switch self {
        case .throttle: "throttled"
        case .crashLoop: "restarting shim"
        }
    }

    /// `message`'s level, and the controller's log level: low enough to show
    /// it, high enough to keep the rest of the log quiet.
    var logLevel: String {
        switch self {
        case .throttle: "notice"
        case .crashLoop: "warning"
        }
    }

    /// How `message` reads in the controller's human log line, after the time.
    var sign: String { " \(logLevel) \(message)" }
}

/// The controller's CPU over a window inside a pause, with the fleet's
/// machines in the store.
struct Stress {
    let fault: StressFault
    let fleet: Fleet
    /// After the sign, so that the first calls' answers are handled.
    static let settle = 2.0
    /// How long the sign may take to show in the log.
    static let signTimeout = 60.0

    func measure() async throws -> [String: Any] {
        defer { try? FileManager.default.removeItem(atPath: fleet.directory) }
        try fleet.writeFiles(longPoll: nil, logLevel: fault.logLevel, faults: [fault.scenarioFault])
        try await fleet.seedStore()
        let controller = try ControllerProcess.start(bench: fleet.bench, directory: fleet.directory)
        defer { controller.stop() }
        let started = Date()
        try await waitForSign(controller)
        let signSeconds = Date().timeIntervalSince(started)
        fleet.log("\(fault.rawValue): \"\(fault.message)\" logged after \(signSeconds) s")
        try await Task.sleep(for: .seconds(Self.settle))

        // The first shim generation's socket; in a crash loop there is no shim to ask.
        let socket = "\(fleet.directory)/run/cloud-1.sock"
        if fault == .throttle { _ = try await Fleet.calls(socket: socket, reset: true) }
        let signsBefore = signCount()
        let clock = ContinuousClock()
        let windowStart = clock.now
        let cpuBefore = controller.cpuSeconds()
        try await Task.sleep(for: .seconds(fleet.bench.stressWindow))
        let cpuAfter = controller.cpuSeconds()
        let window = clock.now - windowStart
        guard controller.process.isRunning else {
            throw Failure("\(fault.rawValue): the controller exited during the window; its log ends:\n\(fleet.logTail())")
        }
        let windowSeconds = Double(window.components.seconds) + Double(window.components.attoseconds) * 1e-18
        let cpu = cpuAfter - cpuBefore
        var result: [String: Any] = [
            "fault": fault.rawValue,
            "scenario_fault": fault.scenarioFault,
            "machines": fleet.size,
            "window_seconds": windowSeconds,
            "cpu_seconds": cpu,
            "cpu_percent_of_core": cpu / windowSeconds * 100,
            "sign_seconds": signSeconds,
        ]
        switch fault {
        case .throttle:
            let calls = try await Fleet.calls(socket: socket)
            result["calls_in_window"] = calls.values.reduce(0, +)
            result["calls_in_window_by_method"] = calls.filter { $0.value > 0 }
        case .crashLoop:
            result["shim_restarts_in_window"] = signCount() - signsBefore
        }
        fleet.log("\(fault.rawValue): \(cpu) CPU s in \(windowSeconds) s")
        return result
    }

    func signCount() -> Int { fleet.controllerLog().components(separatedBy: fault.sign).count - 1 }

    /// Polls the controller's log until `sign` shows in it.
    func waitForSign(_ controller: ControllerProcess) async throws {
        let started = Date()
        while signCount() == 0 {
            guard Date().timeIntervalSince(started) < Self.signTimeout, controller.process.isRunning else {
                throw Failure("""
                    \(fault.rawValue): no \(fault.logLevel) "\(fault.message)" in the controller's log \
                    (in \(Self.signTimeout) s at most); it ends:\n\(fleet.logTail(20))
                    """)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}
