import Foundation
import GRDB

#if canImport(Glibc)
import Glibc
#endif

/// `fleet-bench --listing`: the operator's side of a 100 000-machine fleet.
/// The real controller runs with an empty store and `provider-shim fake`
/// serving N running instances with two interfaces each; the release CLI
/// then imports N machines from a CSV file (timed, while the controller
/// starts polling them), and once every machine has its addresses lists the
/// fleet as a table, as JSON and as JSON lines, and its ids only. Per
/// command: wall-clock seconds, the CLI's peak RSS, the output's size, and
/// the controller's peak RSS during the listings (VmHWM, reset through
/// /proc/PID/clear_refs before them).
///
/// The CLI runs under GNU time (`/usr/bin/time -f %M`), which reports its
/// child's maximum RSS from wait4. Spawned from this process directly, the
/// CLI's figure would start at this process's own peak: the kernel folds
/// the high-water mark of the address space an exec replaces into the
/// task's maximum, and posix_spawn execs from a vfork that shares ours.
struct Listing {
    let fleet: Fleet

    func measure() async throws -> [String: Any] {
        let directory = fleet.directory
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try fleet.writeFiles(longPoll: Fleet.longPoll)
        var csv = "id,provider,credential,instance_id,agent_status,manual\n"
        for index in 1...fleet.size { csv += "m-\(index),cloud,main,i-\(index),,\n" }
        try csv.write(toFile: "\(directory)/fleet.csv", atomically: true, encoding: .utf8)

        let controller = try ControllerProcess.start(bench: fleet.bench, directory: directory)
        defer { controller.stop() }
        try await waitForSocket("\(directory)/run/control.sock", controller)
        var result: [String: Any] = ["machines": fleet.size]

        let imported = try run(["machines", "import", "\(directory)/fleet.csv"], output: "\(directory)/import.out")
        guard imported.status == 0 else { throw Failure("import failed: \(imported.stderr)") }
        result["import_seconds"] = imported.seconds
        result["import_cli_peak_rss_mib"] = imported.peakRSSMiB
        fleet.log("imported in \(imported.seconds) s")

        try await fleet.waitForConvergence(controller, try fleet.reader(), since: Date())
        fleet.log("converged; listing")
        // The controller's peak from here on.
        try "5".write(toFile: "/proc/\(controller.pid)/clear_refs", atomically: false, encoding: .utf8)

        for (name, arguments) in [
            ("table", ["machines", "list"]), ("json", ["machines", "list", "--format", "json"]),
            ("jsonl", ["machines", "list", "--format", "jsonl"]), ("ids", ["machines", "list", "--ids-only"]),
        ] {
            let file = "\(directory)/list-\(name).out"
            let listed = try run(arguments, output: file)
            guard listed.status == 0 else { throw Failure("machines list (\(name)) failed: \(listed.stderr)") }
            let count = try check(name, file)
            guard count == fleet.size else { throw Failure("machines list (\(name)) printed \(count) machines, not \(fleet.size)") }
            result["list_\(name)_seconds"] = listed.seconds
            result["list_\(name)_cli_peak_rss_mib"] = listed.peakRSSMiB
            result["list_\(name)_output_bytes"] = (try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
            fleet.log("listed (\(name)) in \(listed.seconds) s, CLI peak \(listed.peakRSSMiB) MiB")
            try? FileManager.default.removeItem(atPath: file)
        }
        result["controller_peak_rss_while_listing_mib"] = controller.peakRSSMiB()
        let status = try run(["status"], output: "\(directory)/status.out")
        result["status_seconds"] = status.seconds
        return result
    }

    /// Machines in a listing's output, checked to be what the format says.
    private func check(_ format: String, _ file: String) throws -> Int {
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        switch format {
        case "json":
            guard let array = try JSONSerialization.jsonObject(with: data) as? [Any] else { throw Failure("the JSON listing is not an array") }
            return array.count
        case "jsonl":
            var count = 0
            for line in data.split(separator: UInt8(ascii: "\n")) {
                guard (try? JSONSerialization.jsonObject(with: Data(line))) is [String: Any] else { throw Failure("a jsonl line is not an object") }
                count += 1
            }
            return count
        case "table":
            return data.split(separator: UInt8(ascii: "\n")).count - 1
        default:
            return data.split(separator: UInt8(ascii: "\n")).count
        }
    }

    private func waitForSocket(_ path: String, _ controller: ControllerProcess) async throws {
        let started = Date()
        while !FileManager.default.fileExists(atPath: path) {
            guard controller.process.isRunning, Date().timeIntervalSince(started) < 60 else {
                throw Failure("the controller did not serve its control socket; its log ends:\n\(fleet.logTail())")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    struct Run {
        var status: Int32
        var seconds: Double
        var peakRSSMiB: Double
        var stderr: String
    }

    /// Runs the CLI with stdout into `output`; its wall time and peak RSS
    /// (from GNU time, which is a few MiB itself).
    private func run(_ arguments: [String], output: String) throws -> Run {
        let peakFile = output + ".rss"
        let argv = ["/usr/bin/time", "-f", "%M", "-o", peakFile, fleet.bench.instancepoller] + arguments
            + ["--runtime-dir", "\(fleet.directory)/run"]
        let errors = output + ".err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        var pid: pid_t = 0
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        let started = Date()
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, environ)
        guard spawned == 0 else { throw Failure("cannot run \(argv[0]): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let seconds = Date().timeIntervalSince(started)
        let stderr = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
        let exited = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        // GNU time's last line is the figure (a line before it may say the status).
        let peak = ((try? String(contentsOfFile: peakFile, encoding: .utf8)) ?? "").split(separator: "\n").last.flatMap { Double($0) }
        guard let peak else { throw Failure("no peak RSS from /usr/bin/time for \(arguments.joined(separator: " "))") }
        return Run(status: exited, seconds: seconds, peakRSSMiB: peak / 1024, stderr: stderr)
    }
}
