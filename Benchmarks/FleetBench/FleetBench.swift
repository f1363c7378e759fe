import ArgumentParser
import Controller
import Core
import Foundation
import GRDB
import Logging
import ProviderShim
import SwiftProtobuf
import FakeProvider

/// `fleet-bench`: the real controller (`instancepoller run`) with
/// `provider-shim fake` serving N machines that are running with two
/// interfaces each, measured as an operator would see it. Prints one JSON
/// object per fleet size on stdout (scripts/bench makes the table); with
/// `--stress`, one per paused-pair fault instead (StressBench.swift); with
/// `--cluster`, one for several controllers on one PostgreSQL
/// (ClusterBench.swift).
@main
struct FleetBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fleet-bench", abstract: "Fleet-scale benchmark of the controller.")

    @Option(help: "Fleet sizes, comma-separated.") var sizes: String = "1000,10000,100000"
    @Option(help: "The instancepoller binary.") var instancepoller: String
    @Option(help: "The provider-shim binary.") var providerShim: String
    @Option(help: "Seconds after a restart during which provider calls are counted.") var restartWindow: Double = 60
    @Option(help: "Only the largest size is restarted.") var restartSize: Int = 100_000
    @Option(help: "Seconds of steady state over which idle CPU is measured.") var idleWindow: Double = 20
    @Option(help: "Seconds to let the last writes settle (WAL checkpoint) before the idle window.") var settle: Double = 10
    @Option(help: "Give up on convergence after this many seconds.") var timeout: Double = 300
    @Option(help: "Long-poll period (s) of the run that counts the calls of one jittered sweep.") var sweepLongPoll: Double = 30
    @Flag(help: "Measure the controller's CPU while a provider and credential pair is paused, instead of the fleet sizes.") var stress = false
    @Option(help: "Machines in the stress runs.") var stressMachines: Int = 10_000
    @Option(help: "Seconds over which the stress runs measure the controller's CPU.") var stressWindow: Double = 10
    @Flag(help: "Measure bulk import and listing through the CLI at the largest of --sizes, instead of the fleet sizes.") var listing = false
    @Flag(help: "Measure several controllers on one PostgreSQL database (--pg-dir), instead of the fleet sizes.") var cluster = false
    @Option(help: "Machines in the cluster runs.") var clusterMachines: Int = 300_000
    @Option(help: "(provider, credential) pairs in the cluster runs, over up to three providers.") var clusterPairs: Int = 30
    @Option(help: "Controllers in the cluster runs.") var clusterControllers: Int = 3
    @Option(help: "Long-poll period (s) of the cluster run that counts one jittered sweep; raised when convergence is too slow for a sweep to fit.") var clusterSweepLongPoll: Double = 30
    @Option(help: "Stop waiting for a cluster run's convergence after this many seconds (the run goes on, marked unconverged).") var clusterTimeout: Double = 300
    @Option(help: "The controllers' log level in the cluster runs.") var clusterLogLevel: String = "info"
    @Option(help: "Controllers killed in turn (each replaced by a new one before the next) in the cluster's sweep run.") var clusterFailovers: Int = 3
    @Option(help: "The PostgreSQL test cluster's directory (scripts/pg-test-cluster start DIR).") var pgDir: String?
    @Flag(help: "Measure the vsphere backend against govmomi's simulator (--vcsim) at --vsphere-sizes VMs, instead of the fleet sizes.") var vsphere = false
    @Option(help: "VMs in the vsphere runs, comma-separated.") var vsphereSizes: String = "1000,5000"
    @Option(help: "The simulator fixture binary (Tests/Fixtures/vsphere/build.sh OUTDIR builds OUTDIR/vcsim).") var vcsim: String?
    @Option(help: "Keep the cluster runs' controller logs in this directory.") var clusterLogDir: String?

    func run() async throws {
        if stress {
            for fault in StressFault.allCases {
                try emit(try await Stress(fault: fault, fleet: Fleet(size: stressMachines, bench: self)).measure())
            }
            return
        }
        if cluster {
            guard let pgDir else { throw ValidationError("--cluster needs --pg-dir DIR (scripts/pg-test-cluster start DIR)") }
            let options = ClusterBench.Options(
                machines: clusterMachines, pairs: clusterPairs, controllers: clusterControllers, pgDirectory: pgDir,
                instancepoller: instancepoller, providerShim: providerShim, idleWindow: idleWindow, settle: settle,
                sweepLongPoll: clusterSweepLongPoll, timeout: clusterTimeout, logLevel: clusterLogLevel,
                failovers: clusterFailovers, logDirectory: clusterLogDir)
            try emit(try await ClusterBench(options: options).measure())
            return
        }
        if vsphere {
            guard let vcsim else { throw ValidationError("--vsphere needs --vcsim PATH (Tests/Fixtures/vsphere/build.sh OUTDIR builds it)") }
            for size in vsphereSizes.split(separator: ",").compactMap({ Int($0) }) {
                for row in try await VSphereBench(machines: size, vcsim: vcsim, bench: self).measure() { try emit(row) }
            }
            return
        }
        if listing {
            let size = sizes.split(separator: ",").compactMap({ Int($0) }).max() ?? 100_000
            try emit(try await Listing(fleet: Fleet(size: size, bench: self)).measure())
            return
        }
        for size in sizes.split(separator: ",").compactMap({ Int($0) }) {
            try emit(try await Fleet(size: size, bench: self).measure())
        }
    }

    /// One JSON object per line on stdout.
    func emit(_ result: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }
}

struct Fleet {
    let size: Int
    let bench: FleetBench
    let directory: String
    static let maxIDs = 200
    static let longPoll = 900.0

    init(size: Int, bench: FleetBench) {
        self.size = size
        self.bench = bench
        var template = Array("/tmp/fleet-bench-XXXXXX".utf8CString)
        directory = String(cString: mkdtemp(&template))
    }

    func log(_ text: String) { FileHandle.standardError.write(Data("fleet-bench N=\(size): \(text)\n".utf8)) }

    /// The controller's log so far (stdout and stderr, shim lines included).
    func controllerLog() -> String { (try? String(contentsOfFile: "\(directory)/controller.log", encoding: .utf8)) ?? "" }

    /// The log's last lines, for a failure message.
    func logTail(_ lines: Int = 5) -> String { controllerLog().split(separator: "\n").suffix(lines).joined(separator: "\n") }

    /// Waits until every machine has its addresses and sits in the long group.
    func waitForConvergence(_ controller: ControllerProcess, _ reader: DatabaseQueue, since started: Date) async throws {
        while try await reader.read({ db in try Int.fetchOne(db, sql: "SELECT count(*) FROM schedule WHERE grp = 'long'") ?? 0 }) < size {
            guard Date().timeIntervalSince(started) < bench.timeout, controller.process.isRunning else {
                controller.stop()
                throw Failure("did not converge (in \(bench.timeout) s at most); the controller's log ends:\n\(logTail())")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func reader() throws -> DatabaseQueue {
        try DatabaseQueue(path: "\(directory)/store.db", configuration: { var c = Configuration(); c.readonly = true; return c }())
    }

    func measure() async throws -> [String: Any] {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var result = try await measureSweep()
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try writeFiles(longPoll: Self.longPoll)
        try await seedStore()
        result["machines"] = size

        let first = try ControllerProcess.start(bench: bench, directory: directory)
        let started = Date()
        let reader = try reader()
        try await waitForConvergence(first, reader, since: started)
        result["converge_seconds"] = Date().timeIntervalSince(started)
        log("converged in \(result["converge_seconds"]!) s")

        let calls = try await Self.calls(socket: "\(directory)/run/cloud-1.sock")
        let minimum = (size + Self.maxIDs - 1) / Self.maxIDs
        result["calls_instances"] = calls["Instances"] ?? 0
        result["calls_network_interfaces"] = calls["NetworkInterfaces"] ?? 0
        result["calls_validate_credential"] = calls["ValidateCredential"] ?? 0
        result["calls_minimum_per_method"] = minimum

        // Steady state: everything in the long group, nothing due for ~15 min.
        try await Task.sleep(for: .seconds(bench.settle))
        let settled = first.cpuSeconds()
        let idleStart = settled
        try await Task.sleep(for: .seconds(bench.idleWindow))
        let idleRate = (first.cpuSeconds() - idleStart) / bench.idleWindow
        result["idle_cpu_percent"] = idleRate * 100
        // One sweep = polling every machine once (as during convergence) plus
        // a long-poll period of the steady state.
        let sweep = settled + idleRate * Self.longPoll
        result["cpu_seconds_per_sweep"] = sweep
        result["cpu_percent_of_core_over_sweep"] = sweep / Self.longPoll * 100
        result["controller_peak_rss_mib"] = first.peakRSSMiB()
        result["shim_peak_rss_mib"] = first.shimPeakRSSMiB()
        first.stop()
        result["store_bytes"] = ["store.db", "store.db-wal", "store.db-shm"].reduce(0) { total, name in
            total + ((try? FileManager.default.attributesOfItem(atPath: "\(directory)/\(name)")[.size] as? Int) ?? 0)
        }

        if size >= bench.restartSize {
            let restartAt = Date()
            let window = bench.restartWindow
            let dueInWindow = try await reader.read { db in
                try Int.fetchOne(db, sql: "SELECT count(*) FROM schedule WHERE due_ns <= ?", arguments: [Int64((restartAt.timeIntervalSince1970 + window) * 1e9)]) ?? 0
            }
            let second = try ControllerProcess.start(bench: bench, directory: directory)
            try await Task.sleep(for: .seconds(window))
            let after = try await Self.calls(socket: "\(directory)/run/cloud-1.sock")
            second.stop()
            let ideal = (dueInWindow + Self.maxIDs - 1) / Self.maxIDs * 2
            result["restart_calls_first_window"] = (after["Instances"] ?? 0) + (after["NetworkInterfaces"] ?? 0)
            result["restart_ideal_calls"] = ideal
            result["restart_window_seconds"] = window
            log("restart: \(result["restart_calls_first_window"]!) calls in \(window) s, ideal \(ideal)")
        }
        return result
    }

    /// The calls of one jittered long-poll sweep, with a short long poll so
    /// that a sweep fits in the run.
    func measureSweep() async throws -> [String: Any] {
        try writeFiles(longPoll: bench.sweepLongPoll)
        try await seedStore()
        let controller = try ControllerProcess.start(bench: bench, directory: directory)
        defer { controller.stop() }
        try await waitForConvergence(controller, try reader(), since: Date())
        let socket = "\(directory)/run/cloud-1.sock"
        _ = try await Self.calls(socket: socket, reset: true)
        // Every long-group due time falls within longPoll × (1 ± 10 %) of its last poll.
        try await Task.sleep(for: .seconds(bench.sweepLongPoll * 1.1 + 2))
        let calls = try await Self.calls(socket: socket)
        log("one sweep: \(calls["Instances"] ?? 0) Instances calls")
        return [
            "sweep_calls_instances": calls["Instances"] ?? 0,
            "sweep_calls_network_interfaces": calls["NetworkInterfaces"] ?? 0,
            "sweep_long_poll_seconds": bench.sweepLongPoll,
        ]
    }

    /// The scenario (the fleet, plus `faults`: YAML flow mappings) and the
    /// controller's config. `longPoll` nil: the default poll settings.
    func writeFiles(longPoll: Double?, logLevel: String = "warning", faults: [String] = []) throws {
        try ("""
            name: fleet
            fleets:
              - prefix: i-
                count: \(size)
                interfaces: 2
                timeline:
                  - {at: 0s, state: running, raw_status: running}

            """ + (faults.isEmpty ? "" : "faults:\n" + faults.map { "  - \($0)\n" }.joined()))
            .write(toFile: "\(directory)/scenario.yaml", atomically: true, encoding: .utf8)
        try """
            store: store.db
            runtime_directory: run
            log: {level: \(logLevel)}
            \(longPoll.map { "poll: {long_poll: \($0)s}" } ?? "")
            providers:
              cloud:
                shim:
                  command: \(URL(fileURLWithPath: bench.providerShim).standardizedFileURL.path)
                  args: [fake, --scenario, \(directory)/scenario.yaml, --log-level, warning]
                cloud: {type: fake}
            credentials:
              - {provider: cloud, name: main, auth_type: token, attributes: {token: bench}}
            """.write(toFile: "\(directory)/config.yaml", atomically: true, encoding: .utf8)
    }

    func seedStore() async throws {
        let store = try SQLiteMachineStore(path: "\(directory)/store.db", clock: SystemPollClock(), logger: Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() })
        var start = 1
        while start <= size {
            let end = min(start + 9_999, size)
            try await store.addMachines((start...end).map { Machine(id: "m-\($0)", provider: "cloud", credential: "main", instanceID: "i-\($0)") })
            start = end + 1
        }
        try store.close()
    }

    static func calls(socket: String, reset: Bool = false) async throws -> [String: UInt64] {
        let client = try await RPCClient.connect(unixSocketPath: socket, logger: Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() })
        defer { Task { await client.close() } }
        let answer = try await client.call(FakeCloudControl.getCalls, .with { $0.reset = reset }, timeout: .seconds(10))
        return Dictionary(uniqueKeysWithValues: answer.counts.map { ($0.method, $0.count) })
    }
}

struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// `instancepoller run` as a child process.
struct ControllerProcess {
    let process: Process

    static func start(bench: FleetBench, directory: String) throws -> ControllerProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: bench.instancepoller).standardizedFileURL
        process.arguments = ["run", "--config", "\(directory)/config.yaml"]
        FileManager.default.createFile(atPath: "\(directory)/controller.log", contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(directory)/controller.log"))
        log.seekToEndOfFile()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        return ControllerProcess(process: process)
    }

    var pid: Int32 { process.processIdentifier }

    /// User + system CPU seconds so far.
    func cpuSeconds() -> Double { Self.cpuSeconds(pid) }

    /// A process's own user + system CPU seconds so far (/proc/PID/stat).
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ((Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)) / ticks
    }

    static func peakRSSMiB(_ pid: Int32) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kib / 1024
    }

    func peakRSSMiB() -> Double { Self.peakRSSMiB(pid) }

    func shimPeakRSSMiB() -> Double { shimPID().map(Self.peakRSSMiB) ?? 0 }

    /// The controller's first child process found: its one shim.
    func shimPID() -> Int32? {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let child = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == pid { return child }
        }
        return nil
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}
