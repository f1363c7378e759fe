import Controller
import Support
import ControlAPI
import Core
import Foundation
import Logging
import Synchronization
import Testing
import TestSupport

/// One controller's world in a temporary directory: its config file, its
/// store (which the test opens too, as another process would), its runtime
/// directory, and the real `instancepoller run` as a child process.
///
/// The controller is told to log at debug level, so tests can wait for what
/// it says (`polling a batch`, `shim started`, …) instead of sleeping.
struct ControllerHarness: Sendable {
    let directory: TemporaryDirectory
    let store: SQLiteMachineStore
    /// Every controller started, so that ``remove()`` stops any that a
    /// failing test left running.
    private let started = Processes()

    final class Processes: Sendable {
        let list = Mutex<[ChildProcess]>([])
    }

    var configPath: String { directory.file("config.yaml") }
    var runtimeDirectory: String { directory.file("run") }
    var storePath: String { directory.file("store.db") }

    init() throws {
        directory = try TemporaryDirectory()
        store = try SQLiteMachineStore(
            path: directory.file("store.db"), clock: SystemPollClock(),
            logger: Logger(label: "test-store") { _ in SwiftLogNoOpLogHandler() }
        )
    }

    /// Fast settings so the tests run in seconds; production defaults are
    /// in config/example.yaml.
    static let fastSettings = """
        poll:
          short_poll: 100ms
          short_poll_cap: 400ms
          call_timeout: 10s
        supervision:
          health_interval: 200ms
          health_timeout: 2s
          initial_backoff: 100ms
          max_backoff: 400ms
          drain_timeout: 3s
          exit_grace: 1s
        """

    /// A provider entry running `provider-shim fake` on a scenario file.
    func fakeProvider(_ name: String, scenario: String) -> String {
        """
          \(name):
            shim:
              command: \(BuiltProducts.path(of: "provider-shim"))
              args: [fake, --scenario, \(scenario)]
            cloud:
              type: fake
        """
    }

    /// A provider entry whose shim says `problem` on stderr and exits with
    /// `status` at once: a build that cannot start.
    static func failingProvider(_ name: String, problem: String, status: Int) -> String {
        """
          \(name):
            shim:
              command: /bin/sh
              args: ["-c", "echo '\(problem)' >&2; exit \(status)"]
            cloud:
              type: fake
        """
    }

    /// A provider entry running the C shim fixture.
    func cProvider(_ name: String, binary: String) -> String {
        """
          \(name):
            shim:
              command: \(binary)
            cloud:
              type: c-static
        """
    }

    /// Writes the config: `providers` are entries from ``fakeProvider`` and
    /// friends; every provider gets a credential "main" (token=letmein, which
    /// the C shim wants; the fake scenarios here accept any).
    func writeConfig(providers: [String], settings: String = ControllerHarness.fastSettings) throws {
        let names = providers.compactMap { entry in
            entry.split(separator: "\n").first.map { $0.trimmingCharacters(in: .whitespaces).dropLast() }
        }
        let credentials = names.map { name in
            """
              - provider: \(name)
                name: main
                auth_type: token
                attributes: {token: letmein}
            """
        }
        let text = """
            store: store.db
            runtime_directory: run
            \(settings)
            providers:
            \(providers.joined(separator: "\n"))
            credentials:
            \(credentials.joined(separator: "\n"))

            """
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Writes a scenario file and returns its path.
    func scenario(_ name: String, _ yaml: String) throws -> String {
        let path = directory.file("\(name).yaml")
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A scenario of running instances, `id` → one interface with `address`.
    static func runningInstances(_ addresses: [(id: String, address: String)], extra: String = "") -> String {
        var text = "name: generated\ninstances:\n"
        for (index, entry) in addresses.enumerated() {
            text += """
                  - id: \(entry.id)
                    timeline:
                      - at: 0s
                        state: running
                        raw_status: running
                        interfaces:
                          - device_index: 0
                            mac_address: "02:00:00:00:00:\(String(format: "%02x", index))"
                            addresses:
                              - {value: \(entry.address), scope: cloud-local}

                """
        }
        return text + extra
    }

    /// Starts `instancepoller run` and waits until it says it started.
    ///
    /// - Parameter descriptors: a soft limit on open descriptors to start
    ///   it with (through prlimit, which execs it: the pid is the controller's).
    ///   With `hardLimit` it is the hard limit too, which the controller cannot raise.
    /// - Parameter launcher: a command that execs the controller (e.g.
    ///   setpriv, or a shell that sets signal dispositions first), given
    ///   the controller's path and arguments after its own.
    func start(
        logLevel: String = "debug", limitingDescriptorsTo descriptors: Int? = nil, hardLimit: Bool = false,
        environment: [String: String]? = nil, launcher: [String] = []
    ) async throws -> ChildProcess {
        let run = ["run", "--config", configPath, "--log-level", logLevel]
        let controller: ChildProcess
        if let program = launcher.first {
            controller = try await ChildProcess.spawn(
                program, Array(launcher.dropFirst()) + [BuiltProducts.path(of: "instancepoller")] + run, environment: environment
            )
        } else if let descriptors {
            let limit = "--nofile=\(descriptors):\(hardLimit ? "\(descriptors)" : "")"
            controller = try await ChildProcess.spawn("/usr/bin/prlimit", [limit, BuiltProducts.path(of: "instancepoller")] + run, environment: environment)
        } else {
            controller = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), run, environment: environment)
        }
        started.list.withLock { $0.append(controller) }
        do {
            try await controller.stderrLines.waitForLine(containing: "controller started")
        } catch {
            controller.kill()
            throw error
        }
        return controller
    }

    /// Waits until `count` shims have said they started (from log line
    /// `from` on); returns their pids.
    func waitForShims(_ controller: ChildProcess, count: Int, from: Int = 0) async throws -> [Int32] {
        var pids: [Int32] = []
        var next = from
        while pids.count < count {
            let line = try await controller.stderrLines.waitForLine(containing: "shim started", from: next)
            if let pid = logValue("pid", in: line.line).flatMap(Int32.init) { pids.append(pid) }
            next = line.index + 1
        }
        return pids.sorted()
    }

    func add(_ id: String, provider: String, instance: String, agent: Machine.AgentStatus = .none) async throws {
        try await store.addMachine(Machine(id: id, provider: provider, credential: "main", instanceID: instance, agentStatus: agent))
    }

    /// Waits (on the store's events log) until `done` holds for the machines.
    @discardableResult
    func waitForMachines(
        _ what: String,
        _ limit: Duration = .seconds(30),
        _ done: @escaping @Sendable ([String: Machine]) -> Bool
    ) async throws -> [String: Machine] {
        let store = self.store
        return try await withTimeout(limit, what) {
            let watcher = MachineWatcher(store: store, clock: SystemPollClock(), interval: .milliseconds(50))
            let start = try await store.latestRevision()
            var current = Dictionary(uniqueKeysWithValues: try await store.machines().map { ($0.id, $0) })
            if done(current) { return current }
            for try await _ in watcher.batches(after: start) {
                current = Dictionary(uniqueKeysWithValues: try await store.machines().map { ($0.id, $0) })
                if done(current) { return current }
            }
            throw CancellationError()
        }
    }

    /// Runs `instancepoller ARGS --runtime-dir <this test's>`, optionally
    /// feeding `stdin`; returns its exit status and output.
    func cli(_ arguments: [String], stdin: String? = nil, runtimeDir: Bool = true) async throws -> (status: Int32, stdout: String, stderr: String) {
        var arguments = arguments
        // Options go before a "--" (after it come a swapped-in shim's arguments).
        if runtimeDir { arguments.insert(contentsOf: ["--runtime-dir", runtimeDirectory], at: arguments.firstIndex(of: "--") ?? arguments.endIndex) }
        let child = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), arguments)
        if let stdin { child.writeStdin(stdin) }
        child.closeStdin()
        let status = try await child.waitForExit()
        let output = try await child.output()
        return (status, output.stdout, output.stderr)
    }

    /// The runtime directory's entries, sorted.
    func runtimeEntries() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: runtimeDirectory)) ?? []).sorted()
    }

    /// Every live process whose command line mentions this test's directory
    /// (the controller, and the fake shims through their scenario path).
    func processesOfThisTest() -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter {
            ProcessTree.isAlive($0) && ProcessTree.commandLine(of: $0).contains(directory.path)
        }
    }

    /// SIGTERM, then the exit status.
    func stop(_ controller: ChildProcess) async throws -> Int32 {
        controller.terminate()
        return try await controller.waitForExit(.seconds(30))
    }

    func remove() {
        for controller in started.list.withLock({ $0 }) where controller.exitStatusIfExited == nil {
            controller.kill()  // its shims follow: stdin EOF and parent death
        }
        try? store.close()
        directory.remove()
    }
}

extension Machine {
    /// The values of every address.
    var addressValues: [String] { addresses.map(\.value) }
}

/// The time at the start of a controller log line (human format: logfmt,
/// `ts=…` first).
func logTime(_ line: String) -> Date? {
    guard let first = line.split(separator: " ", maxSplits: 1).first, first.hasPrefix("ts=") else { return nil }
    let stamp = first.dropFirst(3)
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.date(from: String(stamp))
}

/// The value of `key=` in a human log line (quoted values unquoted).
func logValue(_ key: String, in line: String) -> String? {
    guard let range = line.range(of: " \(key)=") else { return nil }
    let rest = line[range.upperBound...]
    if rest.first == "\"" {
        let body = rest.dropFirst()
        guard let end = body.firstIndex(of: "\"") else { return nil }
        return String(body[..<end])
    }
    return String(rest.prefix { $0 != " " })
}
