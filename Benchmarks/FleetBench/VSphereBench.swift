import Controller
import Foundation
import GRDB
import Logging

/// `--vsphere`: the real controller with `provider-shim vsphere` polling
/// govmomi's vCenter simulator (Tests/Fixtures/vsphere, `--fleet N`: N
/// running VMs with one card and one guest address each), N machines in the
/// store. Two runs on one simulator: the shim's default inventory TTL (a
/// batch reads its own VMs by reference) and `--inventory-ttl 0` (every
/// call reads the whole scope, as the backend did at first).
///
/// Per run, from the controller's start until every machine sits in the
/// long group (each polled once: one sweep's work): seconds; the SOAP
/// requests vCenter served, by method, and the bytes of its answers (the
/// fixture logs each); the simulator's CPU seconds (vCenter's work); the
/// shim's CPU seconds and peak RSS; the controller's peak RSS.
struct VSphereBench {
    let machines: Int
    let vcsim: String
    let bench: FleetBench

    struct Truth: Decodable {
        var url: String
        var user: String
        var password: String
        var datacenter: String
    }

    func log(_ text: String) { FileHandle.standardError.write(Data("fleet-bench vsphere N=\(machines): \(text)\n".utf8)) }

    func measure() async throws -> [[String: Any]] {
        var template = Array("/tmp/vsphere-bench-XXXXXX".utf8CString)
        let root = String(cString: mkdtemp(&template))
        defer { try? FileManager.default.removeItem(atPath: root) }

        // The simulator: its truth on stdout, its request log on stderr (a
        // file, read by offset), stdin held open (its end stops it).
        let simulator = Process()
        simulator.executableURL = URL(fileURLWithPath: vcsim).standardizedFileURL
        simulator.arguments = ["--fleet", "\(machines)"]
        let requestLog = "\(root)/vcsim.log"
        FileManager.default.createFile(atPath: requestLog, contents: nil)
        simulator.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: requestLog))
        let stdout = Pipe(), stdin = Pipe()
        simulator.standardOutput = stdout
        simulator.standardInput = stdin
        let creating = Date()
        try simulator.run()
        defer {
            try? stdin.fileHandleForWriting.close()
            simulator.terminate()
            simulator.waitUntilExit()
        }
        guard let line = Self.firstLine(stdout.fileHandleForReading) else {
            throw Failure("the simulator printed no truth; its log ends:\n\(Self.tail(requestLog))")
        }
        let truth = try JSONDecoder().decode(Truth.self, from: Data(line.utf8))
        log("the simulator made \(machines) VMs in \(String(format: "%.1f", Date().timeIntervalSince(creating))) s")

        var rows: [[String: Any]] = []
        for ttl in [60, 0] {
            rows.append(try await run(inventoryTTL: ttl, truth: truth, simulator: simulator.processIdentifier, requestLog: requestLog, root: root))
        }
        return rows
    }

    func run(inventoryTTL: Int, truth: Truth, simulator: Int32, requestLog: String, root: String) async throws -> [String: Any] {
        let directory = "\(root)/ttl-\(inventoryTTL)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let credential = "\(directory)/vcenter.yaml"
        guard FileManager.default.createFile(
            atPath: credential, contents: Data("user: \(truth.user)\npassword: \(truth.password)\n".utf8), attributes: [.posixPermissions: 0o600]
        ) else { throw Failure("cannot write \(credential)") }
        try """
            store: store.db
            runtime_directory: run
            log: {level: warning}
            poll: {long_poll: 900s}
            providers:
              vcenter:
                shim:
                  command: \(URL(fileURLWithPath: bench.providerShim).standardizedFileURL.path)
                  args: [vsphere, --inventory-ttl, "\(inventoryTTL)", --log-level, warning]
                cloud:
                  type: vsphere
                  endpoint: \(truth.url)
                  attributes: {datacenter: \(truth.datacenter)}
            credentials:
              - {provider: vcenter, name: main, auth_type: userpass, file: \(credential)}
            """.write(toFile: "\(directory)/config.yaml", atomically: true, encoding: .utf8)
        let store = try SQLiteMachineStore(path: "\(directory)/store.db", clock: SystemPollClock(), logger: Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() })
        try await store.addMachines((0..<machines).map {
            Machine(id: "m-\($0)", provider: "vcenter", credential: "main", instanceID: String(format: "fleet-%05d", $0))
        })
        try store.close()

        let offset = (try? FileManager.default.attributesOfItem(atPath: requestLog)[.size] as? Int) ?? 0
        let simulatorCPU = ControllerProcess.cpuSeconds(simulator)
        let controller = try ControllerProcess.start(bench: bench, directory: directory)
        defer { controller.stop() }
        let started = Date()
        let reader = try DatabaseQueue(path: "\(directory)/store.db", configuration: { var c = Configuration(); c.readonly = true; return c }())
        var shim: Int32?
        var shimCPU = 0.0, shimRSS = 0.0
        while try await reader.read({ db in try Int.fetchOne(db, sql: "SELECT count(*) FROM schedule WHERE grp = 'long'") ?? 0 }) < machines {
            // The shim's figures while it lives (read before the controller stops it).
            if shim == nil { shim = controller.shimPID() }
            if let shim {
                shimCPU = max(shimCPU, ControllerProcess.cpuSeconds(shim))
                shimRSS = max(shimRSS, ControllerProcess.peakRSSMiB(shim))
            }
            guard Date().timeIntervalSince(started) < bench.timeout, controller.process.isRunning else {
                let log = (try? String(contentsOfFile: "\(directory)/controller.log", encoding: .utf8)) ?? ""
                throw Failure("inventory TTL \(inventoryTTL): did not converge in \(bench.timeout) s; the controller's log ends:\n"
                    + log.split(separator: "\n").suffix(5).joined(separator: "\n"))
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let converge = Date().timeIntervalSince(started)
        if let shim {
            shimCPU = max(shimCPU, ControllerProcess.cpuSeconds(shim))
            shimRSS = max(shimRSS, ControllerProcess.peakRSSMiB(shim))
        }
        let vcenterCPU = ControllerProcess.cpuSeconds(simulator) - simulatorCPU
        let controllerRSS = controller.peakRSSMiB()
        controller.stop()

        // What vCenter served in this run (the log from the run's offset).
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: requestLog))
        try handle.seek(toOffset: UInt64(offset))
        let lines = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        try handle.close()
        var requests: [String: Int] = [:]
        var bytes = 0
        for line in lines {
            let fields = line.split(separator: " ")
            if fields.count == 2, fields[0] == "soap" { requests[String(fields[1]), default: 0] += 1 }
            if fields.count == 3, fields[0] == "answered", let size = Int(fields[2]) { bytes += size }
        }
        log("inventory TTL \(inventoryTTL) s: converged in \(String(format: "%.2f", converge)) s, \(requests.values.reduce(0, +)) requests, \(bytes) bytes")
        return [
            "machines": machines,
            "inventory_ttl_seconds": inventoryTTL,
            "converge_seconds": converge,
            "requests": requests,
            "requests_total": requests.values.reduce(0, +),
            "answer_bytes": bytes,
            "vcenter_cpu_seconds": vcenterCPU,
            "shim_cpu_seconds": shimCPU,
            "shim_peak_rss_mib": shimRSS,
            "controller_peak_rss_mib": controllerRSS,
        ]
    }

    /// The first line on `handle` (the simulator's truth; it can be MiBs).
    static func firstLine(_ handle: FileHandle) -> String? {
        var data = Data()
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { return nil }
            data += chunk
            if let newline = data.firstIndex(of: UInt8(ascii: "\n")) {
                return String(decoding: data[..<newline], as: UTF8.self)
            }
        }
    }

    static func tail(_ path: String) -> String {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").suffix(5).joined(separator: "\n")
    }
}
