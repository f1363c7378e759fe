@_spi(Testing) import Controller
import Core
import FakeProvider
import Foundation
import Logging
import Synchronization
import Testing
import TestSupport

/// Several real `instancepoller run` processes on one PostgreSQL database
/// (docs/DESIGN.md §8), each with its own runtime directory and its own
/// fake shims, which all append to one call log (`provider-shim fake
/// --call-log`) so that a test can see every cloud call of every
/// controller on one timeline.
///
/// Pairs: providers `fake-a` and `fake-b`, credentials `c0`…, machines
/// `m-<provider>-<credential>-<n>` with instance `i-<same>`. With
/// addresses, polled machines settle in the long group (15 min); without,
/// they stay in the short group and are polled every 400 ms.
struct ClusterHarness: Sendable {
    let directory: TemporaryDirectory
    let cluster: PostgresCluster
    let database: String
    let pairs: [CredentialKey]
    let machinesPerPair: Int
    let leaseTTL: Duration
    let dedicatedCluster: Bool
    /// Every controller started, by index; stopped by ``remove()``.
    private let started = Started()

    final class Started: Sendable {
        private let list = Mutex<[Int: ChildProcess]>([:])
        func withLock<T>(_ body: (inout [Int: ChildProcess]) -> T) -> T { list.withLock { body(&$0) } }
    }

    var callLog: String { directory.file("calls.log") }
    var location: PostgresLocation { cluster.location(database: database) }

    /// - Parameter dedicatedCluster: a PostgreSQL server of its own, for a
    ///   test that restarts it (the shared one serves other tests).
    init(
        credentialsPerProvider: Int, machinesPerPair: Int, leaseTTL: Duration = .seconds(3), instancesLatency: String? = nil,
        withAddresses: Bool = true, dedicatedCluster: Bool = false
    ) async throws {
        directory = try TemporaryDirectory()
        self.dedicatedCluster = dedicatedCluster
        cluster = dedicatedCluster ? try await PostgresCluster.dedicated() : try await PostgresCluster.shared()
        database = try await cluster.createDatabase()
        self.machinesPerPair = machinesPerPair
        self.leaseTTL = leaseTTL
        var pairs: [CredentialKey] = []
        for provider in ["fake-a", "fake-b"] {
            for index in 0..<credentialsPerProvider { pairs.append(CredentialKey(provider: provider, name: "c\(index)")) }
        }
        self.pairs = pairs
        try Self.writePrivate(directory.file("pg.password"), cluster.password + "\n")
        try Self.writePrivate(directory.file("credential.key"), CredentialSealer.newKeyLine() + "\n")
        for provider in ["fake-a", "fake-b"] {
            var entries: [(id: String, address: String)] = []
            for pair in pairs where pair.provider == provider {
                for n in 0..<machinesPerPair {
                    entries.append((Self.instance(pair, n), "10.\(pair.provider == "fake-a" ? 1 : 2).\(pair.name.dropFirst()).\(n + 1)"))
                }
            }
            var faults = ""
            if let instancesLatency {
                faults = "faults:\n  - kind: latency\n    methods: [Instances]\n    delay: \(instancesLatency)\n"
            }
            // Without addresses a running machine stays in the short group
            // (polled every short_poll_cap): a test sees polling go on.
            let scenario = withAddresses
                ? ControllerHarness.runningInstances(entries, extra: faults)
                : "name: generated\ninstances:\n"
                    + entries.map { "  - id: \($0.id)\n    timeline:\n      - {at: 0s, state: running, raw_status: running}\n" }.joined()
                    + faults
            try scenario.write(toFile: directory.file("\(provider).yaml"), atomically: true, encoding: .utf8)
        }
    }

    /// Runs `body` with a harness made with these arguments, and removes it
    /// (its controllers killed, its database dropped) however `body` ends.
    static func with(
        credentialsPerProvider: Int, machinesPerPair: Int, leaseTTL: Duration = .seconds(3), instancesLatency: String? = nil,
        withAddresses: Bool = true, dedicatedCluster: Bool = false, _ body: (ClusterHarness) async throws -> Void
    ) async throws {
        let harness = try await ClusterHarness(
            credentialsPerProvider: credentialsPerProvider, machinesPerPair: machinesPerPair, leaseTTL: leaseTTL,
            instancesLatency: instancesLatency, withAddresses: withAddresses, dedicatedCluster: dedicatedCluster)
        do {
            try await body(harness)
        } catch {
            await harness.remove()
            throw error
        }
        await harness.remove()
    }

    static func machine(_ pair: CredentialKey, _ n: Int) -> String { "m-\(pair.provider)-\(pair.name)-\(n)" }
    static func instance(_ pair: CredentialKey, _ n: Int) -> String { "i-\(pair.provider)-\(pair.name)-\(n)" }

    static func writePrivate(_ path: String, _ text: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
    }

    /// Every pair's machines, added through a store of the test's own.
    func addMachines() async throws {
        try await withStore { store in
            var machines: [Machine] = []
            for pair in pairs {
                for n in 0..<machinesPerPair {
                    machines.append(Machine(
                        id: Self.machine(pair, n), provider: pair.provider, credential: pair.name, instanceID: Self.instance(pair, n)))
                }
            }
            try await store.addMachines(machines)
        }
    }

    /// Runs `body` with a PostgreSQL store on the test's database, as
    /// another process would open it.
    func withStore<T: Sendable>(_ body: @escaping @Sendable (PostgresMachineStore) async throws -> T) async throws -> T {
        let store = PostgresMachineStore(
            location: location, password: cluster.password, sealer: nil, clock: SystemPollClock(),
            logger: Logger(label: "test-store") { _ in SwiftLogNoOpLogHandler() })
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await store.run()
                return nil
            }
            defer { group.cancelAll() }
            try await store.migrate()
            let value = try await body(store)
            group.cancelAll()
            return value
        }
    }

    func configPath(_ index: Int) -> String { directory.file("controller-\(index).yaml") }
    func runtimeDirectory(_ index: Int) -> String { directory.file("run-\(index)") }
    static func holder(_ index: Int) -> String { "ctl-\(index)" }

    func writeConfig(_ index: Int) throws {
        let shim = BuiltProducts.path(of: "provider-shim")
        var providers = ""
        for provider in ["fake-a", "fake-b"] {
            providers += """
                  \(provider):
                    shim:
                      command: \(shim)
                      args: [fake, --scenario, \(directory.file("\(provider).yaml")), --call-log, \(callLog)]
                    cloud:
                      type: fake

                """
        }
        var credentials = ""
        for pair in pairs {
            credentials += """
                  - provider: \(pair.provider)
                    name: \(pair.name)
                    auth_type: token
                    attributes: {token: secret-\(pair.name)}

                """
        }
        let text = """
            store: \(location.description)
            store_password_file: pg.password
            credential_key_file: credential.key
            runtime_directory: run-\(index)
            cluster:
              lease_ttl: \(leaseTTL.components.seconds)s
              name: \(Self.holder(index))
            metrics:
              address: 127.0.0.1:0
            \(ControllerHarness.fastSettings)
            providers:
            \(providers)
            credentials:
            \(credentials)
            """
        try text.write(toFile: configPath(index), atomically: true, encoding: .utf8)
    }

    /// Starts controller `index` and waits until it says it started.
    @discardableResult
    func start(_ index: Int) async throws -> ChildProcess {
        try writeConfig(index)
        let controller = try await ChildProcess.spawn(
            BuiltProducts.path(of: "instancepoller"), ["run", "--config", configPath(index), "--log-level", "debug"])
        started.withLock { $0[index] = controller }
        do {
            try await controller.stderrLines.waitForLine(containing: "controller started", .seconds(60))
        } catch {
            controller.kill()
            throw error
        }
        return controller
    }

    func controller(_ index: Int) -> ChildProcess? { started.withLock { $0[index] } }

    /// Controller `index`'s `/metrics` body (its listener's port from its log).
    func scrapeMetrics(_ index: Int) async throws -> String {
        let process = try #require(self.controller(index))
        let serving = try await process.stderrLines.waitForLine(containing: "serving metrics")
        let port = try #require(logValue("address", in: serving.line)?.split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) })
        return try #require(try await HTTP.get(port: port, path: "/metrics").components(separatedBy: "\r\n\r\n").last)
    }

    /// Runs `instancepoller ARGS` against controller `index`'s control socket.
    func cli(_ arguments: [String], controller index: Int) async throws -> (status: Int32, stdout: String, stderr: String) {
        let child = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), arguments + ["--runtime-dir", runtimeDirectory(index)])
        child.closeStdin()
        let status = try await child.waitForExit()
        let output = try await child.output()
        return (status, output.stdout, output.stderr)
    }

    /// The pairs each controller holds, as its log says (`lease taken`,
    /// `lease handed back`, `lease lost`, `pair left`), by index.
    func heldFromLogs(_ indices: [Int]) -> [Int: Set<CredentialKey>] {
        var held: [Int: Set<CredentialKey>] = [:]
        for index in indices {
            guard let controller = controller(index) else { continue }
            var mine: Set<CredentialKey> = []
            for line in controller.stderrLines.lines {
                guard let label = logValue("credential", in: line), let key = CredentialKey(label: label) else {
                    if line.contains("left the controllers") { mine = [] }
                    continue
                }
                if line.contains("lease taken") {
                    mine.insert(key)
                } else if line.contains("lease handed back") || line.contains("lease lost") || line.contains("pair left to another controller") {
                    mine.remove(key)
                }
            }
            held[index] = mine
        }
        return held
    }

    /// Waits, on the controllers' log lines, until `done` holds for what
    /// they hold.
    func waitForLeases(
        _ indices: [Int], _ what: String, _ limit: Duration = .seconds(60),
        _ done: @escaping @Sendable ([Int: Set<CredentialKey>]) -> Bool
    ) async throws -> [Int: Set<CredentialKey>] {
        try await withTimeout(limit, what) {
            while true {
                let held = heldFromLogs(indices)
                if done(held) { return held }
                let counts = indices.map { controller($0)?.stderrLines.lines.count ?? 0 }
                // The next lease line of any controller.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (slot, index) in indices.enumerated() {
                        guard let controller = controller(index) else { continue }
                        group.addTask {
                            _ = try await controller.stderrLines.waitForLine(containing: "lease", from: counts[slot], limit)
                        }
                    }
                    _ = try await group.next()
                    group.cancelAll()
                }
            }
        }
    }

    /// Whether `held` is a fair split of every pair among `indices`: all
    /// held, none twice, shares within one of each other.
    func isBalanced(_ held: [Int: Set<CredentialKey>], among indices: [Int]) -> Bool {
        let sets = indices.map { held[$0] ?? [] }
        let all = sets.reduce(into: Set<CredentialKey>()) { $0.formUnion($1) }
        let total = sets.map(\.count).reduce(0, +)
        let counts = sets.map(\.count)
        return all == Set(pairs) && total == pairs.count && counts.max()! - counts.min()! <= 1
    }

    // MARK: The call log

    struct Call: Sendable {
        var pid: Int32
        var method: String
        var credential: String
        var ids: [String]
        var start: UInt64
        /// Nil while it never ended (its shim was killed).
        var end: UInt64?
    }

    /// Every call in the shared log, starts matched with their ends.
    func calls() throws -> [Call] {
        let text = (try? String(contentsOfFile: callLog, encoding: .utf8)) ?? ""
        var open: [String: [Int]] = [:]
        var calls: [Call] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 7, let time = UInt64(fields[0]), let pid = Int32(fields[1]) else {
                Issue.record("malformed call log line: \(line)")
                continue
            }
            let ids = fields[6].isEmpty ? [] : fields[6].split(separator: ",").map(String.init)
            let signature = "\(pid) \(fields[3]) \(fields[4]) \(fields[6])"
            if fields[2] == "start" {
                calls.append(Call(pid: pid, method: fields[3], credential: fields[4], ids: ids, start: time))
                open[signature, default: []].append(calls.count - 1)
            } else if let index = open[signature]?.first {
                open[signature]?.removeFirst()
                calls[index].end = time
            }
        }
        return calls
    }

    /// What breaks the rule "never two calls of one pair, or of one
    /// machine, in flight at once", across every controller. A call that
    /// never ended (its controller and shims were killed) counts until
    /// `killedAt`.
    func overlaps(_ calls: [Call], killedAt: UInt64? = nil) -> [String] {
        var problems: [String] = []
        var byPair: [String: [Call]] = [:]
        for call in calls {
            // The provider is not in the line; a credential name is unique
            // per provider here, so the scenario file's provider is known
            // by the machine ids.
            let provider = call.ids.first.map { $0.hasPrefix("i-fake-a") ? "fake-a" : "fake-b" } ?? "?"
            byPair["\(provider)/\(call.credential)", default: []].append(call)
        }
        for (pair, list) in byPair {
            let sorted = list.sorted { $0.start < $1.start }
            for (first, second) in zip(sorted, sorted.dropFirst()) {
                let firstEnd = first.end ?? killedAt ?? UInt64.max
                if second.start < firstEnd {
                    problems.append(
                        "\(pair): \(first.method) of pid \(first.pid) [\(first.start)…\(firstEnd)] overlaps \(second.method) of pid \(second.pid) from \(second.start)")
                }
            }
        }
        return problems
    }

    /// Monotonic nanoseconds now, on the clock of the call log.
    static func monotonicNow() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// SIGTERM to controller `index`; its exit status.
    func stopController(_ index: Int) async throws -> Int32 {
        guard let controller = controller(index) else { return -1 }
        controller.terminate()
        return try await controller.waitForExit(.seconds(30))
    }

    func stopAll() async {
        for (_, controller) in started.withLock({ $0 }) where controller.exitStatusIfExited == nil {
            controller.terminate()
            _ = try? await controller.waitForExit(.seconds(30))
        }
    }

    func remove() async {
        for (_, controller) in started.withLock({ $0 }) where controller.exitStatusIfExited == nil {
            Foundation.kill(controller.pid, SIGCONT)
            controller.kill()
        }
        if dedicatedCluster {
            try? await cluster.stop()
        } else {
            _ = try? await cluster.psql("DROP DATABASE \"\(database)\" WITH (FORCE)", database: "postgres")
        }
        directory.remove()
    }
}
