import Controller
import Foundation
import Logging
import PostgresNIO

/// `fleet-bench --cluster`: several real `instancepoller run` controllers on
/// one PostgreSQL database (docs/DESIGN.md §8), the release binaries, with
/// `provider-shim fake` fleets serving every machine as running with two
/// interfaces. Two runs, each in a fresh database on the test cluster that
/// `scripts/pg-test-cluster start DIR` started:
///
/// 1. steady: the default poll settings (§6.2.1). Time until every machine
///    sits in the long group, the calls that took, the pairs each
///    controller holds once settled, and over an idle window each
///    controller's CPU, its shims' CPU and PostgreSQL's own CPU; each
///    controller's peak RSS.
/// 2. sweep: a short long poll (30 s, longer when the fleet converges too
///    slowly), so that a whole jittered sweep fits in the run. After
///    convergence the calls of one sweep are counted per pair from the
///    shims' shared call log, against ceil(machines / max ids per call) per
///    method (§6.2.4). Then, in rounds, the longest-running
///    controller is killed with SIGKILL and the time is measured until a
///    survivor holds each of its pairs (a higher epoch, §8.2) and until a
///    survivor's shim makes that pair's first call; a new controller joins
///    before the next round. With the long poll this short, machines of
///    every pair come due all the time, so the survivors find overdue
///    machines when they take the pairs over (§8.2 "Failure").
///
/// Prints one JSON object (scripts/bench makes the tables).
struct ClusterBench {
    struct Options: Sendable {
        var machines: Int
        var pairs: Int
        var controllers: Int
        var pgDirectory: String
        var instancepoller: String
        var providerShim: String
        var idleWindow: Double
        var settle: Double
        var sweepLongPoll: Double
        var timeout: Double
        var logLevel: String
        var failovers: Int
        /// Where to copy the controllers' logs before a run's directory is
        /// removed; nil: nowhere.
        var logDirectory: String?
    }

    /// One (provider, credential) pair: its machines `m-<credential>-<n>`
    /// are instances `i-<credential>-<n>`, n = 1 … machines, a fleet of the
    /// provider's fake scenario. Credential names are unique across
    /// providers, so the call log's credential names the pair.
    struct Pair: Sendable {
        var provider: String
        var credential: String
        var machines: Int
        var label: String { "\(provider)/\(credential)" }
    }

    let options: Options
    let cluster: TestCluster
    let pairs: [Pair]
    let providers: [String]
    /// The default of `poll.max_ids_per_call` (§6.2.1).
    let maxIDs = PollSettings().maxIDsPerCall
    /// The default of `cluster.lease_ttl` (§8.2).
    let leaseTTL = ClusterSettings().leaseTTL

    init(options: Options) throws {
        guard options.machines >= options.pairs, options.pairs >= 1, options.controllers >= 2, options.failovers >= 1 else {
            throw Failure("--cluster needs at least one machine per pair, one pair, two controllers and one failover")
        }
        self.options = options
        cluster = try TestCluster(directory: options.pgDirectory)
        // Up to three providers, the pairs split evenly among them.
        let providerCount = min(3, options.pairs)
        providers = (0..<providerCount).map { "fake-\(Character(UnicodeScalar(UInt8(97 + $0))))" }
        var pairs: [Pair] = []
        for index in 0..<options.pairs {
            let provider = index * providerCount / options.pairs
            let first = (0..<index).filter { $0 * providerCount / options.pairs == provider }.count
            let letter = Character(UnicodeScalar(UInt8(97 + provider)))
            let machines = options.machines / options.pairs + (index < options.machines % options.pairs ? 1 : 0)
            pairs.append(Pair(provider: providers[provider], credential: "\(letter)\(first)", machines: machines))
        }
        self.pairs = pairs
    }

    func log(_ text: String) { FileHandle.standardError.write(Data("fleet-bench cluster: \(text)\n".utf8)) }

    /// The fewest calls per method that poll every machine once: full
    /// batches per pair (§6.2.4).
    func minimumCalls(_ pair: Pair) -> Int { (pair.machines + maxIDs - 1) / maxIDs }

    func measure() async throws -> [String: any Sendable] {
        var result: [String: any Sendable] = [
            "machines": options.machines, "pairs": pairs.count, "providers": providers.count, "controllers": options.controllers,
            "lease_ttl_seconds": secondsOf(leaseTTL), "max_ids_per_call": maxIDs, "log_level": options.logLevel,
            "calls_minimum_per_method": pairs.map(minimumCalls).reduce(0, +), "cores": ProcessInfo.processInfo.activeProcessorCount,
        ]
        let steady = try await withRun("steady", longPoll: nil) { run in try await run.measureSteady() }
        result.merge(steady) { $1 }
        // A sweep is exactly one poll of each machine in the window only if
        // the first sweep's polls are bunched: burst < long poll / 2 - 2 s
        // (a machine is polled again 0.8 to 1.1 long polls later: jitter and
        // batch filling, §6.2.2 and §6.2.4). Convergence bounds the burst;
        // the time to 99 % of it, so that a few stragglers do not stretch
        // the sweep run.
        let converge = steady["converge_99_percent_seconds"] as? Double ?? 0
        var longPoll = options.sweepLongPoll
        if longPoll < 2 * (converge + 2) {
            longPoll = (2 * (converge + 2) / 10).rounded(.up) * 10
            log("long poll of the sweep run raised from \(options.sweepLongPoll) s to \(longPoll) s: 99 % convergence took \(format(converge)) s")
        }
        let sweep = try await withRun("sweep", longPoll: longPoll) { run in try await run.measureSweepAndFailover(longPoll: longPoll) }
        result.merge(sweep) { $1 }
        result["overlapping_calls"] = (steady["steady_overlapping_calls"] as? Int ?? 0) + (sweep["sweep_overlapping_calls"] as? Int ?? 0)
        return result
    }

    /// A fresh database and directory for one run; the controllers are
    /// stopped and both removed afterwards, whatever happens.
    func withRun(
        _ name: String, longPoll: Double?, _ body: (ClusterRun) async throws -> [String: any Sendable]
    ) async throws -> [String: any Sendable] {
        let run = try await ClusterRun(bench: self, name: name, longPoll: longPoll)
        do {
            let store = run.store
            let result = try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await store.run() }
                defer { group.cancelAll() }
                try await run.seed()
                return try await body(run)
            }
            await run.remove()
            return result
        } catch {
            log("\(name) run failed; its controllers' logs end:\n\(run.logTails())")
            await run.remove()
            throw error
        }
    }
}

/// One run: a database, N controllers, their fake shims and call log.
final class ClusterRun {
    let bench: ClusterBench
    let name: String
    let longPoll: Double?
    let database: String
    let directory: String
    let store: PostgresMachineStore
    /// A connection of the benchmark's own to the run's database, for what
    /// the store does not answer (counts, the database's clock).
    let connection: PostgresConnection
    /// Every controller started, in order.
    var controllers: [ClusterController] = []
    /// Those not killed.
    var live: [ClusterController] { controllers.filter { !$0.killed } }

    var options: ClusterBench.Options { bench.options }
    var callLog: String { "\(directory)/calls.log" }

    init(bench: ClusterBench, name: String, longPoll: Double?) async throws {
        self.bench = bench
        self.name = name
        self.longPoll = longPoll
        var template = Array("/tmp/fleet-bench-cluster-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure("cannot make a temporary directory") }
        directory = String(cString: made)
        database = "fleet_bench_\(name)_\(UInt32.random(in: 0...UInt32.max))"
        let admin = try await bench.cluster.connect(database: "postgres")
        do {
            _ = try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(database)"), logger: TestCluster.quiet).collect()
        } catch {
            try? await admin.close()
            throw error
        }
        try? await admin.close()
        connection = try await bench.cluster.connect(database: database)
        // The benchmark's own counts run in one process: no parallel
        // workers to start on a machine this small.
        _ = try await connection.query("SET max_parallel_workers_per_gather = 0", logger: TestCluster.quiet).collect()
        store = PostgresMachineStore(
            location: bench.cluster.location(database: database), password: bench.cluster.password, sealer: nil, clock: SystemPollClock(),
            logger: TestCluster.quiet)
        try writeFiles()
    }

    func log(_ text: String) { bench.log("\(name): \(text)") }

    // MARK: Setup

    /// The password and key files (0600), one fake scenario per provider
    /// (a fleet per pair, two interfaces each), one config per controller.
    func writeFiles() throws {
        try Self.writePrivate("\(directory)/pg.password", bench.cluster.password + "\n")
        try Self.writePrivate("\(directory)/credential.key", CredentialSealer.newKeyLine() + "\n")
        for provider in bench.providers {
            var scenario = "name: \(provider)\nfleets:\n"
            for pair in bench.pairs where pair.provider == provider {
                scenario += """
                      - prefix: i-\(pair.credential)-
                        count: \(pair.machines)
                        interfaces: 2
                        timeline:
                          - {at: 0s, state: running, raw_status: running}

                    """
            }
            try scenario.write(toFile: "\(directory)/\(provider).yaml", atomically: true, encoding: .utf8)
        }
        for index in 0..<options.controllers { try writeConfig(index) }
    }

    /// Controller `index`'s config: the default TTL, its own runtime
    /// directory, every shim appending to the one call log.
    func writeConfig(_ index: Int) throws {
        let shim = URL(fileURLWithPath: options.providerShim).standardizedFileURL.path
        do {
            var text = """
                store: \(bench.cluster.location(database: database).description)
                store_password_file: \(directory)/pg.password
                credential_key_file: \(directory)/credential.key
                runtime_directory: \(directory)/run-\(index)
                log: {level: \(options.logLevel)}
                cluster: {name: \(ClusterController.holder(index))}

                """
            if let longPoll { text += "poll: {long_poll: \(longPoll)s}\n" }
            text += "providers:\n"
            for provider in bench.providers {
                text += """
                      \(provider):
                        shim:
                          command: \(shim)
                          args: [fake, --scenario, \(directory)/\(provider).yaml, --call-log, \(callLog), --log-level, warning]
                        cloud: {type: fake}

                    """
            }
            text += "credentials:\n"
            for pair in bench.pairs {
                text += "  - {provider: \(pair.provider), name: \(pair.credential), auth_type: token, attributes: {token: bench}}\n"
            }
            // It holds the credentials' attributes (fake tokens): 0600.
            try Self.writePrivate("\(directory)/controller-\(index).yaml", text)
        }
    }

    static func writePrivate(_ path: String, _ text: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw Failure("cannot write \(path)")
        }
    }

    /// Every machine, through a store of the benchmark's own, 10 000 at a
    /// time.
    func seed() async throws {
        let started = Date()
        try await store.migrate()
        var chunk: [Machine] = []
        for pair in bench.pairs {
            for n in 1...pair.machines {
                chunk.append(Machine(
                    id: "m-\(pair.credential)-\(n)", provider: pair.provider, credential: pair.credential, instanceID: "i-\(pair.credential)-\(n)"))
                if chunk.count == 10_000 {
                    try await store.addMachines(chunk)
                    chunk.removeAll(keepingCapacity: true)
                }
            }
        }
        if !chunk.isEmpty { try await store.addMachines(chunk) }
        seedSeconds = Date().timeIntervalSince(started)
        log("seeded \(options.machines) machines in \(format(seedSeconds)) s")
    }

    var seedSeconds = 0.0

    /// Starts every controller, one right after the other.
    func startControllers() throws {
        for _ in 0..<options.controllers { try startController() }
    }

    /// Starts the next controller, `bench-<n>`, with a config of its own.
    @discardableResult
    func startController() throws -> ClusterController {
        let index = controllers.count
        if index >= options.controllers { try writeConfig(index) }
        let controller = try ClusterController.start(
            index: index, instancepoller: options.instancepoller, config: "\(directory)/controller-\(index).yaml",
            log: "\(directory)/controller-\(index).log")
        controllers.append(controller)
        return controller
    }

    // MARK: Measuring

    func scalar(_ sql: String) async throws -> Int64 {
        for try await value in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: TestCluster.quiet).decode(Int64.self) {
            return value
        }
        throw Failure("\(sql): no row")
    }

    /// The database's clock in nanoseconds since the epoch, as SQL: the
    /// schedule's due times are on the wall clock of the same machine.
    let nowNanosecondsSQL = "(extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"

    /// The database's clock, in nanoseconds since the epoch.
    func databaseNow() async throws -> Int64 {
        try await scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint") * 1000
    }

    /// Unexpired leases by holder.
    func heldPairs() async throws -> [String: Set<CredentialKey>] {
        let leases = try await store.leases()
        let now = try await databaseNow()
        var held: [String: Set<CredentialKey>] = [:]
        for lease in leases where lease.expiresAt.nanosecondsSinceEpoch > now { held[lease.holder, default: []].insert(lease.key) }
        return held
    }

    func isBalanced(_ held: [String: Set<CredentialKey>]) -> Bool {
        let counts = live.map { held[$0.holder]?.count ?? 0 }
        return counts.reduce(0, +) == bench.pairs.count && counts.max()! - counts.min()! <= 1
    }

    struct Convergence {
        /// Every machine reached the long group within the timeout.
        var converged: Bool
        /// Until converged, or until the timeout.
        var seconds: Double
        /// Until 99 % of the machines were in the long group.
        var nearlySeconds: Double
        var longGroup: Int64
        var balancedSeconds: Double?
        var mostPairsHeld: Int
        var stalls: [[String: any Sendable]]
    }

    /// Convergence stalls seen in this run.
    var stalls: [[String: any Sendable]] = []

    /// Convergence made no progress for 5 s: which pairs have machines left
    /// in the short group, who holds them, how many of those were already
    /// polled (a status written) and how many are overdue by over 5 s.
    func reportStall(after: Double) async throws {
        let held = try await heldPairs()
        var holders: [String: String] = [:]
        for (holder, keys) in held { for key in keys { holders[key.description] = holder } }
        let rows = try await connection.query(
            PostgresQuery(unsafeSQL: """
                SELECT m.provider || '/' || m.credential, count(*),
                    count(*) FILTER (WHERE m.status_updated_at IS NOT NULL),
                    count(*) FILTER (WHERE s.due_ns < \(nowNanosecondsSQL) - 5000000000)
                FROM schedule s JOIN machines m ON m.id = s.machine_id WHERE s.grp = 'short' GROUP BY 1 ORDER BY 1
                """), logger: TestCluster.quiet)
        var pairs: [[String: any Sendable]] = []
        for try await (pair, short, polled, overdue) in rows.decode((String, Int64, Int64, Int64).self) {
            pairs.append(["pair": pair, "holder": holders[pair] ?? "-", "short": short, "polled": polled, "overdue": overdue])
        }
        stalls.append(["after_seconds": after, "pairs": pairs])
        log("no progress for 5 s after \(format(after)) s; short group: "
            + pairs.map { "\($0["pair"]!) (\($0["holder"]!)): \($0["short"]!) short, \($0["polled"]!) polled, \($0["overdue"]!) overdue" }
                .joined(separator: "; "))
    }

    /// Starts the controllers and waits until every machine sits in the
    /// long group (it has its addresses, §6.2.5), reading the schedule
    /// every 250 ms once nearly there.
    func converge() async throws -> Convergence {
        let started = Date()
        try startControllers()
        var balanced: Double?
        var most = 0
        var lastLog = started
        var lastCount: Int64 = -1
        var lastChange = started
        var stallReported = false
        var nearly: Double?
        var long: Int64 = 0
        var round = 0
        while true {
            // The leases (a few rows) every 250 ms; the count reads the
            // whole schedule: every second until 90 % of the machines are
            // there, then every 250 ms.
            if round % 4 == 0 || long * 10 >= options.machines * 9 {
                long = try await scalar("SELECT count(*) FROM schedule WHERE grp = 'long'")
            }
            round += 1
            if long != lastCount {
                lastCount = long
                lastChange = Date()
                stallReported = false
            } else if !stallReported, long > 0, Date().timeIntervalSince(lastChange) >= 5 {
                stallReported = true
                try await reportStall(after: Date().timeIntervalSince(started))
            }
            let held = try await heldPairs()
            most = max(most, held.values.map(\.count).max() ?? 0)
            if balanced == nil, isBalanced(held) { balanced = Date().timeIntervalSince(started) }
            let elapsed = Date().timeIntervalSince(started)
            if nearly == nil, long * 100 >= options.machines * 99 { nearly = elapsed }
            // A run that does not converge is measured on all the same, and
            // says so.
            if long >= options.machines || elapsed >= options.timeout {
                let converged = long >= options.machines
                if !converged { log("did not converge in \(options.timeout) s: \(long) of \(options.machines) machines in the long group") }
                return Convergence(
                    converged: converged, seconds: elapsed, nearlySeconds: nearly ?? elapsed, longGroup: long, balancedSeconds: balanced,
                    mostPairsHeld: most, stalls: stalls)
            }
            if let gone = live.first(where: { !$0.process.isRunning }) {
                throw Failure("controller \(gone.holder) exited while converging")
            }
            if Date().timeIntervalSince(lastLog) >= 10 {
                lastLog = Date()
                log("\(long) of \(options.machines) machines in the long group after \(format(lastLog.timeIntervalSince(started))) s")
            }
            try await Task.sleep(for: .milliseconds(250))
        }
    }

    /// The steady run: convergence, then the idle window.
    func measureSteady() async throws -> [String: any Sendable] {
        let cpuBefore = cpuTotals()
        let convergence = try await converge()
        let cpuConverged = cpuTotals()
        if convergence.converged { log("converged in \(format(convergence.seconds)) s") }
        let calls = try CallLog.read(callLog)
        var result: [String: any Sendable] = [
            "seed_seconds": seedSeconds,
            "converged": convergence.converged,
            "converge_seconds": convergence.seconds,
            "converge_99_percent_seconds": convergence.nearlySeconds,
            "converge_long_group": convergence.longGroup,
            "leases_balanced_seconds": convergence.balancedSeconds ?? -1,
            "most_pairs_one_controller_while_converging": convergence.mostPairsHeld,
            "converge_stalls": convergence.stalls,
            "converge_calls_instances": calls.lines.count { $0.isStart && $0.method == "Instances" },
            "converge_calls_network_interfaces": calls.lines.count { $0.isStart && $0.method == "NetworkInterfaces" },
            "converge_cpu_seconds_controllers": cpuConverged.controllers - cpuBefore.controllers,
            "converge_cpu_seconds_shims": cpuConverged.shims - cpuBefore.shims,
            "converge_cpu_seconds_postgres": cpuConverged.postgres - cpuBefore.postgres,
        ]
        try await Task.sleep(for: .seconds(options.settle))
        let held = try await heldPairs()
        let beforeCalls = CallLog.size(callLog)
        let before = controllers.map { (own: $0.cpuSeconds(), shims: $0.shimsCPUSeconds()) }
        let postgresBefore = try bench.cluster.cpuSeconds()
        let machineBefore = MachineCPU.busySeconds()
        let loadBefore = MachineCPU.loadAverage()
        try await Task.sleep(for: .seconds(options.idleWindow))
        let window = options.idleWindow
        let postgres = (try bench.cluster.cpuSeconds() - postgresBefore) / window * 100
        let machineBusy = (MachineCPU.busySeconds() - machineBefore) / window
        var rows: [[String: any Sendable]] = []
        for (controller, cpu) in zip(controllers, before) {
            rows.append([
                "holder": controller.holder,
                "pairs_held": held[controller.holder]?.count ?? 0,
                "idle_cpu_percent": (controller.cpuSeconds() - cpu.own) / window * 100,
                "shims_idle_cpu_percent": (controller.shimsCPUSeconds() - cpu.shims) / window * 100,
                "peak_rss_mib": controller.peakRSSMiB(),
                "shims_peak_rss_mib": controller.shimsPeakRSSMiB(),
                "log_mib": Double((try? FileManager.default.attributesOfItem(atPath: controller.logPath)[.size] as? Int) ?? 0) / 1_048_576,
            ])
        }
        let idleCalls = try CallLog.read(callLog, from: beforeCalls).lines.count { $0.isStart }
        result["controller_rows"] = rows
        result["idle_window_seconds"] = window
        result["postgres_idle_cpu_percent"] = postgres
        result["idle_window_calls"] = idleCalls
        result["machine_busy_cores_idle_window"] = machineBusy
        result["load_average_idle_window"] = loadBefore
        result["steady_overlapping_calls"] = try CallLog.read(callLog).overlaps().count
        log("idle: controllers \(rows.map { format($0["idle_cpu_percent"] as? Double ?? 0) }) %, PostgreSQL \(format(postgres)) %")
        return result
    }

    /// The sweep run: convergence, one jittered sweep's calls, then a
    /// controller killed.
    func measureSweepAndFailover(longPoll: Double) async throws -> [String: any Sendable] {
        let convergence = try await converge()
        if convergence.converged { log("converged in \(format(convergence.seconds)) s (long poll \(format(longPoll)) s)") }
        let start = CallLog.size(callLog)
        // Every long-group due time falls within long poll × (1 ± 10 %) of
        // the machine's last poll (§6.2.2).
        try await Task.sleep(for: .seconds(longPoll * 1.1 + 2))
        let sweep = try CallLog.read(callLog, from: start)
        var instances = 0
        var interfaces = 0
        var atMinimum = 0
        var off: [[String: any Sendable]] = []
        for pair in bench.pairs {
            let mine = sweep.lines.filter { $0.isStart && $0.credential == pair.credential }
            let calls = (mine.count { $0.method == "Instances" }, mine.count { $0.method == "NetworkInterfaces" })
            instances += calls.0
            interfaces += calls.1
            let minimum = bench.minimumCalls(pair)
            if calls.0 == minimum && calls.1 == minimum {
                atMinimum += 1
            } else {
                off.append(["pair": pair.label, "instances": calls.0, "network_interfaces": calls.1, "minimum": minimum])
            }
        }
        log("one sweep: \(instances) Instances, \(interfaces) NetworkInterfaces calls; \(atMinimum) of \(bench.pairs.count) pairs at the minimum")
        var result: [String: any Sendable] = [
            "sweep_long_poll_seconds": longPoll,
            "sweep_converged": convergence.converged,
            "sweep_converge_seconds": convergence.seconds,
            "sweep_converge_long_group": convergence.longGroup,
            "sweep_converge_stalls": convergence.stalls,
            "sweep_calls_instances": instances,
            "sweep_calls_network_interfaces": interfaces,
            "sweep_pairs_at_minimum": atMinimum,
            "sweep_every_pair_at_minimum": atMinimum == bench.pairs.count,
            "sweep_pairs_off_minimum": off,
        ]
        // Each round kills the longest-running live controller, then
        // starts a new one and waits until the pairs are spread over the
        // full number again.
        var rounds: [[String: any Sendable]] = []
        var unfinished: [Int32: UInt64] = [:]
        for round in 0..<options.failovers {
            if round > 0 {
                let newcomer = try startController()
                try await waitUntilBalanced(with: newcomer)
            }
            let failover = try await measureFailover(round: round)
            rounds.append(failover.row)
            unfinished.merge(failover.unfinished) { $1 }
        }
        let firstCalls = rounds.compactMap { $0["first_call_seconds_max"] as? Double }
        let leases = rounds.compactMap { $0["lease_seconds_max"] as? Double }
        result["failover_rounds"] = rounds
        result["failover_first_call_seconds_max"] = firstCalls.max()!
        result["failover_lease_seconds_max"] = leases.max()!
        result["sweep_overlapping_calls"] = try CallLog.read(callLog).overlaps(unfinishedEnd: unfinished).count
        return result
    }

    /// Waits (two minutes at most) until the newcomer holds its share and
    /// the pairs are spread within one of each other, then 5 s more for it
    /// to load and poll its pairs.
    func waitUntilBalanced(with newcomer: ClusterController) async throws {
        let started = Date()
        while true {
            let held = try await heldPairs()
            if isBalanced(held), (held[newcomer.holder]?.count ?? 0) >= bench.pairs.count / options.controllers { break }
            guard Date().timeIntervalSince(started) < 120, newcomer.process.isRunning else {
                throw Failure("\(newcomer.holder) did not get its share within 120 s: \(held.mapValues(\.count))")
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        log("\(newcomer.holder) joined; balanced after \(format(Date().timeIntervalSince(started))) s")
        try await Task.sleep(for: .seconds(5))
    }

    /// Kills the longest-running controller with SIGKILL at steady state
    /// and follows its pairs: taken over in the leases table (a survivor
    /// holds it, at a higher epoch), then the pair's first call by a
    /// survivor's shim in the call log (§8.2 "Failure").
    func measureFailover(round: Int) async throws -> (row: [String: any Sendable], unfinished: [Int32: UInt64]) {
        let victim = live[0]
        let survivors = live.dropFirst()
        let survivorHolders = Set(survivors.map(\.holder))
        let leases = try await store.leases()
        let now = try await databaseNow()
        let orphans = leases.filter { $0.holder == victim.holder && $0.expiresAt.nanosecondsSinceEpoch > now }
        guard !orphans.isEmpty else { throw Failure("controller \(victim.holder) holds no pair to fail over") }
        let credentials = Set(orphans.map(\.key.name))
        let inPairs = "m.credential IN (\(credentials.sorted().map { "'\($0)'" }.joined(separator: ",")))"
        let ttl = secondsOf(bench.leaseTTL)
        // A survivor can only poll an orphaned pair at once if some of its
        // machines are overdue when it takes the pair (§8.2 "Failure"); a
        // pair with nothing due is next polled when its schedule says, which
        // is no measure of the failover. So the kill is timed (within one
        // long poll) for a moment when each of the victim's pairs has
        // machines coming due between 3 s later (beyond what its batches may
        // already have pulled in, §6.2.4) and the earliest its lease can run
        // out, two thirds of the TTL later.
        let waitStarted = Date()
        if let killAt = try await killTime(credentials: credentials, inPairs: inPairs, ttl: ttl) {
            let wait = Double(killAt - (try await databaseNow())) / 1e9
            if wait > 0 { try await Task.sleep(for: .seconds(wait)) }
        } else {
            log("no moment in the next long poll has machines of every pair of \(victim.holder) coming due; killing it now")
        }
        let waited = Date().timeIntervalSince(waitStarted)
        let victimShims = Set(ProcTree.children(of: victim.pid))
        let lastRenewal = try await store.controllers().first { $0.identity.holder == victim.holder }?.lastRenewal.nanosecondsSinceEpoch ?? now
        let logOffset = CallLog.size(callLog)

        kill(victim.pid, SIGKILL)
        let killedAt = monotonicNanoseconds()
        if let index = controllers.firstIndex(where: { $0.index == victim.index }) { controllers[index].killed = true }
        let killedWall = try await databaseNow()
        let sinceRenewal = Double(killedWall - lastRenewal) / 1e9
        // What is due by the earliest time a lease can run out: the work
        // waiting for the survivors.
        let earliestExpiry = killedWall + Int64(ttl * 2 / 3 * 1e9)
        let pairsWithWork = try await scalar("""
            SELECT count(DISTINCT m.credential) FROM schedule s JOIN machines m ON m.id = s.machine_id
            WHERE \(inPairs) AND s.due_ns <= \(earliestExpiry)
            """)
        let machinesDue = try await scalar("""
            SELECT count(*) FROM schedule s JOIN machines m ON m.id = s.machine_id WHERE \(inPairs) AND s.due_ns <= \(earliestExpiry)
            """)
        log("killed \(victim.holder) (\(orphans.count) pairs) \(format(sinceRenewal)) s after its last renewal")

        var taken: [CredentialKey: (holder: String, epoch: Int64, seconds: Double)] = [:]
        var firstCalls: [String: (pid: Int32, seconds: Double)] = [:]
        var offset = logOffset
        let deadline = killedAt + UInt64(max(60, 6 * ttl) * 1e9)
        while taken.count < orphans.count || firstCalls.count < credentials.count {
            guard monotonicNanoseconds() < deadline else {
                throw Failure("failover unfinished after \(format(Double(deadline - killedAt) / 1e9)) s: \(taken.count) of \(orphans.count) pairs taken, \(firstCalls.count) polled")
            }
            let current = try await store.leases()
            let at = Double(monotonicNanoseconds() - killedAt) / 1e9
            for old in orphans where taken[old.key] == nil {
                if let lease = current.first(where: { $0.key == old.key }), survivorHolders.contains(lease.holder), lease.epoch > old.epoch {
                    taken[old.key] = (lease.holder, lease.epoch, at)
                }
            }
            // The log first: a shim that wrote a line read here is alive
            // when the children are listed next.
            let read = try CallLog.read(callLog, from: offset)
            offset = read.end
            let shims = Set(survivors.flatMap { ProcTree.children(of: $0.pid) }).subtracting(victimShims)
            for line in read.lines where line.isStart && line.time > killedAt && shims.contains(line.pid) && credentials.contains(line.credential) {
                if firstCalls[line.credential] == nil { firstCalls[line.credential] = (line.pid, Double(line.time - killedAt) / 1e9) }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        // Each survivor after loading its share of the orphaned pairs.
        try await Task.sleep(for: .seconds(5))
        var rows: [[String: any Sendable]] = []
        for old in orphans.sorted(by: { $0.key.description < $1.key.description }) {
            let take = taken[old.key]!
            let call = firstCalls[old.key.name]!.seconds
            rows.append([
                "pair": old.key.description, "holder": take.holder, "epoch": take.epoch, "lease_seconds": take.seconds,
                "first_call_seconds": call,
                // The lease ran out TTL after the victim's last renewal; a
                // survivor claims it at its next renewal (every TTL / 3).
                "claimed_after_expiry_seconds": take.seconds - (ttl - sinceRenewal),
                "first_call_after_lease_seconds": call - take.seconds,
            ])
        }
        let leaseMax = taken.values.map(\.seconds).max()!
        let callMax = firstCalls.values.map(\.seconds).max()!
        log("failover \(round + 1): leases taken within \(format(leaseMax)) s, first calls within \(format(callMax)) s")
        let row: [String: any Sendable] = [
            "killed_holder": victim.holder,
            "orphaned_pairs": orphans.count,
            "killed_after_renewal_seconds": sinceRenewal,
            "killed_at_unix_seconds": Double(killedWall) / 1e9,
            "waited_for_due_work_seconds": waited,
            "pairs_with_due_work": pairsWithWork,
            "machines_due_by_earliest_expiry": machinesDue,
            "lease_seconds_max": leaseMax,
            "first_call_seconds_max": callMax,
            "pairs": rows,
            "survivor_peak_rss_mib": survivors.map { $0.peakRSSMiB() },
        ]
        return (row, Dictionary(victimShims.map { ($0, killedAt) }) { $1 })
    }

    /// The first moment, from 1 s on and within one long poll, at which
    /// each of `credentials`' pairs has machines coming due between 3 s and
    /// two thirds of the TTL later (database clock, ns), from their due
    /// times read once: a poll bumps a machine's due time a long poll
    /// ahead, out of this window. Nil when there is none.
    func killTime(credentials: Set<String>, inPairs: String, ttl: Double) async throws -> Int64? {
        let start = try await databaseNow()
        let horizon = start + Int64((longPoll ?? 0) * 1e9)
        var due: [String: [Int64]] = [:]
        let rows = try await connection.query(
            PostgresQuery(unsafeSQL: """
                SELECT m.credential, s.due_ns FROM schedule s JOIN machines m ON m.id = s.machine_id
                WHERE \(inPairs) AND s.due_ns > \(start) AND s.due_ns <= \(horizon)
                """), logger: TestCluster.quiet)
        for try await (credential, dueNanoseconds) in rows.decode((String, Int64).self) { due[credential, default: []].append(dueNanoseconds) }
        for key in due.keys { due[key]!.sort() }
        let lead = Int64(3e9)
        let latest = Int64(ttl * 2 / 3 * 1e9)
        var moment = start + Int64(1e9)
        while moment + latest <= horizon {
            let ready = credentials.allSatisfy { credential in
                guard let times = due[credential] else { return false }
                // The first due time after moment + lead, by bisection.
                var low = 0
                var high = times.count
                while low < high {
                    let middle = (low + high) / 2
                    if times[middle] <= moment + lead { low = middle + 1 } else { high = middle }
                }
                return low < times.count && times[low] <= moment + latest
            }
            if ready { return moment }
            moment += Int64(250e6)
        }
        return nil
    }

    struct CPUTotals {
        var controllers: Double
        var shims: Double
        var postgres: Double
    }

    func cpuTotals() -> CPUTotals {
        CPUTotals(
            controllers: controllers.map { $0.cpuSeconds() }.reduce(0, +), shims: controllers.map { $0.shimsCPUSeconds() }.reduce(0, +),
            postgres: (try? bench.cluster.cpuSeconds()) ?? 0)
    }

    // MARK: Teardown

    func logTails(_ lines: Int = 5) -> String {
        controllers.map { controller in
            let text = (try? String(contentsOfFile: controller.logPath, encoding: .utf8)) ?? ""
            return "\(controller.holder):\n" + text.split(separator: "\n").suffix(lines).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    /// Stops the controllers (SIGTERM, then SIGKILL after 30 s), drops the
    /// database and removes the directory.
    func remove() async {
        for controller in controllers { await controller.stop() }
        if let keep = options.logDirectory {
            try? FileManager.default.createDirectory(atPath: keep, withIntermediateDirectories: true)
            for controller in controllers {
                try? FileManager.default.copyItem(atPath: controller.logPath, toPath: "\(keep)/\(name)-\(controller.holder).log")
            }
        }
        try? await connection.close()
        if let admin = try? await bench.cluster.connect(database: "postgres") {
            _ = try? await admin.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(database) WITH (FORCE)"), logger: TestCluster.quiet).collect()
            try? await admin.close()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// `instancepoller run` as a child process of the benchmark.
struct ClusterController {
    let index: Int
    let process: Process
    let logPath: String
    /// Killed with SIGKILL by a failover round.
    var killed = false
    var holder: String { Self.holder(index) }
    var pid: Int32 { process.processIdentifier }

    static func holder(_ index: Int) -> String { "bench-\(index)" }

    static func start(index: Int, instancepoller: String, config: String, log: String) throws -> ClusterController {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: instancepoller).standardizedFileURL
        process.arguments = ["run", "--config", config]
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardError = handle
        process.standardOutput = handle
        try process.run()
        try handle.close()
        return ClusterController(index: index, process: process, logPath: log)
    }

    func cpuSeconds() -> Double { ControllerProcess(process: process).cpuSeconds() }
    func peakRSSMiB() -> Double { ControllerProcess.peakRSSMiB(pid) }

    /// The CPU of its shims: the live ones' plus the reaped ones' (§6.4).
    func shimsCPUSeconds() -> Double {
        ProcTree.children(of: pid).compactMap(ProcTree.stat).map(\.cpuSeconds).reduce(0, +) + (ProcTree.stat(pid)?.childrenCPUSeconds ?? 0)
    }

    func shimsPeakRSSMiB() -> Double { ProcTree.children(of: pid).map(ControllerProcess.peakRSSMiB).max() ?? 0 }

    func stop() async {
        guard process.isRunning else { return }
        process.terminate()
        for _ in 0..<300 where process.isRunning { try? await Task.sleep(for: .milliseconds(100)) }
        if process.isRunning { kill(pid, SIGKILL) }
        for _ in 0..<50 where process.isRunning { try? await Task.sleep(for: .milliseconds(100)) }
    }
}

/// The PostgreSQL test cluster `scripts/pg-test-cluster start DIR` runs: the
/// files of DIR, and the server's processes for their CPU.
struct TestCluster: Sendable {
    let host: String
    let port: Int
    let user: String
    let password: String
    /// The server's data directory (`<base>/data`).
    let dataDirectory: String

    static let quiet = Logger(label: "fleet-bench") { _ in SwiftLogNoOpLogHandler() }

    init(directory: String) throws {
        func read(_ name: String) throws -> String {
            guard let text = try? String(contentsOfFile: "\(directory)/\(name)", encoding: .utf8) else {
                throw Failure("\(directory) holds no PostgreSQL test cluster (no \(name)): run scripts/pg-test-cluster start \(directory)")
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        host = try read("host")
        guard let port = Int(try read("port")) else { throw Failure("\(directory)/port is not a port number") }
        self.port = port
        user = try read("user")
        password = try read("password")
        dataDirectory = try read("base") + "/data"
    }

    func location(database: String) -> PostgresLocation {
        PostgresLocation(host: host, port: port, user: user, database: database, tls: .disable)
    }

    func connect(database: String) async throws -> PostgresConnection {
        let configuration = PostgresConnection.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: .disable)
        return try await PostgresConnection.connect(configuration: configuration, id: 1, logger: Self.quiet)
    }

    /// User + system CPU seconds of the postmaster (the first line of
    /// `postmaster.pid`) and every process below it, plus what its reaped
    /// children used (autovacuum workers, backends that ended).
    func cpuSeconds() throws -> Double {
        guard let text = try? String(contentsOfFile: "\(dataDirectory)/postmaster.pid", encoding: .utf8),
              let first = text.split(separator: "\n").first, let postmaster = Int32(first)
        else { throw Failure("cannot read \(dataDirectory)/postmaster.pid") }
        let table = ProcTree.table()
        var total = table[postmaster]?.childrenCPUSeconds ?? 0
        for (pid, entry) in table where ProcTree.descends(pid, from: postmaster, in: table) { total += entry.cpuSeconds }
        return total
    }
}

/// Processes as /proc shows them.
enum ProcTree {
    struct Stat {
        var parent: Int32
        /// utime + stime.
        var cpuSeconds: Double
        /// cutime + cstime: of the children it reaped.
        var childrenCPUSeconds: Double
    }

    static let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))

    static func stat(_ pid: Int32) -> Stat? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 14, let parent = Int32(fields[1]) else { return nil }
        func value(_ index: Int) -> Double { Double(fields[index]) ?? 0 }
        return Stat(parent: parent, cpuSeconds: (value(11) + value(12)) / ticks, childrenCPUSeconds: (value(13) + value(14)) / ticks)
    }

    static func table() -> [Int32: Stat] {
        var table: [Int32: Stat] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            if let pid = Int32(entry), let stat = stat(pid) { table[pid] = stat }
        }
        return table
    }

    static func children(of parent: Int32) -> [Int32] {
        table().filter { $0.value.parent == parent }.map(\.key)
    }

    /// Whether `pid` is `root` or below it.
    static func descends(_ pid: Int32, from root: Int32, in table: [Int32: Stat]) -> Bool {
        var current = pid
        for _ in 0..<64 {
            if current == root { return true }
            guard let parent = table[current]?.parent, parent > 1 else { return false }
            current = parent
        }
        return false
    }
}

/// The whole machine's CPU (/proc/stat), to say how busy it was beside the
/// benchmark.
enum MachineCPU {
    /// Busy seconds of every core together since boot.
    static func busySeconds() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8), let line = text.split(separator: "\n").first else { return 0 }
        let values = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard values.count >= 8 else { return 0 }
        // user nice system idle iowait irq softirq steal
        return (values[0] + values[1] + values[2] + values[5] + values[6] + values[7]) / ProcTree.ticks
    }

    static func loadAverage() -> String {
        ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").prefix(3).joined(separator: " ")
    }
}

/// The fake shims' shared call log (`provider-shim fake --call-log`):
/// `<CLOCK_MONOTONIC ns> <pid> start|end <method> <credential> <count> <ids>`.
struct CallLog {
    struct Line {
        var time: UInt64
        var pid: Int32
        var isStart: Bool
        var method: String
        var credential: String
        /// Matches a call's start with its end.
        var signature: Int
    }

    var lines: [Line]
    /// The offset after the last whole line read.
    var end: UInt64

    static func size(_ path: String) -> UInt64 {
        ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? NSNumber)?.uint64Value ?? 0
    }

    /// The whole lines from `offset` on.
    static func read(_ path: String, from offset: UInt64 = 0) throws -> CallLog {
        guard let handle = FileHandle(forReadingAtPath: path) else { return CallLog(lines: [], end: offset) }
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        let data = try handle.readToEnd() ?? Data()
        var lines: [Line] = []
        var consumed = 0
        data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var start = 0
            while let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) {
                if let line = parse(UnsafeRawBufferPointer(rebasing: bytes[start..<newline])) { lines.append(line) }
                start = newline + 1
            }
            consumed = start
        }
        return CallLog(lines: lines, end: offset + UInt64(consumed))
    }

    static func parse(_ bytes: UnsafeRawBufferPointer) -> Line? {
        var fields: [String] = []
        var from = 0
        var index = 0
        while index < bytes.count && fields.count < 6 {
            if bytes[index] == UInt8(ascii: " ") {
                fields.append(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[from..<index]), as: UTF8.self))
                from = index + 1
            }
            index += 1
        }
        guard fields.count == 6, let time = UInt64(fields[0]), let pid = Int32(fields[1]) else { return nil }
        var hasher = Hasher()
        hasher.combine(pid)
        hasher.combine(fields[3])
        hasher.combine(fields[4])
        hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: bytes[from...]))
        return Line(time: time, pid: pid, isStart: fields[2] == "start", method: fields[3], credential: fields[4], signature: hasher.finalize())
    }

    /// Where two calls of one pair were in flight at once (never, by
    /// §6.2.4 and §8.2): each call's start matched with its end; one that
    /// never ended lasts until its shim was killed (`unfinishedEnd`, by
    /// pid), or for ever.
    func overlaps(unfinishedEnd: [Int32: UInt64] = [:]) -> [String] {
        var calls: [(credential: String, start: UInt64, end: UInt64?, pid: Int32)] = []
        var open: [Int: [Int]] = [:]
        for line in lines {
            if line.isStart {
                calls.append((line.credential, line.time, nil, line.pid))
                open[line.signature, default: []].append(calls.count - 1)
            } else if let index = open[line.signature]?.first {
                open[line.signature]?.removeFirst()
                calls[index].end = line.time
            }
        }
        var problems: [String] = []
        for (credential, list) in Dictionary(grouping: calls, by: \.credential) {
            let sorted = list.sorted { $0.start < $1.start }
            for (first, second) in zip(sorted, sorted.dropFirst()) where second.start < (first.end ?? unfinishedEnd[first.pid] ?? UInt64.max) {
                problems.append("\(credential): pid \(first.pid) and pid \(second.pid)")
            }
        }
        return problems
    }
}

func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

func secondsOf(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func format(_ value: Double) -> String { String(format: "%.2f", value) }
