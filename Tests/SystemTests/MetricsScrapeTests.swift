import Foundation
import Testing
import TestSupport

/// The metrics as Prometheus sees them (docs/DESIGN.md §6.6): a real
/// controller polls a fake cloud and its `/metrics` is scraped over HTTP;
/// the scrape has the operational series with sane values and passes
/// `promtool check metrics`. The alerting rules in dist/prometheus pass
/// `promtool check rules` and their unit tests (`promtool test rules`),
/// and every metric that they and the Grafana dashboard in dist/grafana
/// name is one the controller serves — a renamed metric fails here.
///
/// promtool comes from the Debian package `prometheus`, which scripts/test
/// installs; without it these tests fail and say so.
@Suite("Metrics scrape, alerts and dashboard (docs/DESIGN.md §6.6)")
struct MetricsScrapeTests {
    @Test func aScrapeHasTheOperationalSeriesWithSaneValuesAndPassesPromtool() async throws {
        let promtool = try Promtool.path()
        let startedAt = Date().timeIntervalSince1970
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([(id: "c-1", address: "10.1.0.1")]))
        // 2031-02-03T04:05:06Z
        let expiry = 1_927_857_906.0
        try """
            store: store.db
            runtime_directory: run
            \(ControllerHarness.fastSettings)
            metrics:
              address: 127.0.0.1:0
            providers:
            \(h.fakeProvider("cloud", scenario: scenario))
            credentials:
              - provider: cloud
                name: main
                auth_type: token
                attributes: {token: letmein}
                expires: 2031-02-03T04:05:06Z
              - provider: cloud
                name: spare
                auth_type: token
                attributes: {token: letmein}

            """.write(toFile: h.configPath, atomically: true, encoding: .utf8)
        let version = try await h.cli(["--version"], runtimeDir: false)
        let built = try #require(version.stdout.firstMatch(of: /^(\S+) \(revision ([^)\s]+)\)/), "--version said \(version.stdout)")

        let controller = try await h.start()
        let serving = try await controller.stderrLines.waitForLine(containing: "serving metrics")
        let address = try #require(logValue("address", in: serving.line))
        let port = try #require(address.split(separator: ":").last.flatMap { Int($0.prefix { $0.isNumber }) })
        // The engine's first round has read the credentials' expiries.
        _ = try await controller.stderrLines.waitForLine(containing: "credential expiries read")
        try await h.add("m1", provider: "cloud", instance: "c-1")
        // Said once the batch's results are written and the gauge is set.
        _ = try await controller.stderrLines.waitForLine(containing: "batch polled")

        let response = try await HTTP.get(port: port, path: "/metrics")
        #expect(response.hasPrefix("HTTP/1.1 200 OK"), "\(response.prefix(200))")
        let body = try #require(response.range(of: "\r\n\r\n").map { String(response[$0.upperBound...]) })
        let scrape = try Scrape(body)
        let now = Date().timeIntervalSince1970

        #expect(scrape.value("instancepoller_build_info", ["version": String(built.1), "revision": String(built.2)]) == 1, "\(scrape.series("instancepoller_build_info"))")
        let start = try #require(scrape.value("process_start_time_seconds"))
        // /proc's start time has clock-tick resolution.
        #expect(start >= startedAt - 1 && start <= now, "start \(start), test began \(startedAt)")
        #expect((scrape.value("process_open_fds") ?? 0) > 0)
        #expect((scrape.value("process_max_fds") ?? 0) >= (scrape.value("process_open_fds") ?? .infinity))
        #expect((scrape.value("process_resident_memory_bytes") ?? 0) > 1_000_000)
        #expect((scrape.value("process_virtual_memory_bytes") ?? 0) >= (scrape.value("process_resident_memory_bytes") ?? .infinity))
        #expect((scrape.value("process_cpu_seconds_total") ?? 0) > 0)
        let polled = try #require(scrape.value("instancepoller_last_successful_poll_timestamp_seconds", ["provider": "cloud"]))
        #expect(polled >= startedAt && polled <= now, "last successful poll \(polled), test began \(startedAt)")
        #expect(scrape.value("instancepoller_credential_expiry_timestamp_seconds", ["provider": "cloud", "credential": "main"]) == expiry)
        #expect(scrape.series("instancepoller_credential_expiry_timestamp_seconds").count == 1, "spare has no expiry, so no series")
        #expect(scrape.value("instancepoller_machines_overdue", ["provider": "cloud"]) == 0)
        #expect(scrape.value("instancepoller_config_last_reload_successful") == 1)
        let loaded = try #require(scrape.value("instancepoller_config_last_reload_success_timestamp_seconds"))
        #expect(loaded >= startedAt && loaded <= now)
        #expect(scrape.series("instancepoller_batch_size_bucket").contains { $0.labels["provider"] == "cloud" })
        #expect(scrape.value("instancepoller_shim_restarts_total", ["provider": "cloud"]) == 0)
        #expect(!body.contains("letmein"))

        // promtool lints the exposition; any word from it is a problem.
        let check = try await Promtool.run(promtool, ["check", "metrics"], stdin: body)
        #expect(check.status == 0 && check.output.isEmpty, "promtool check metrics:\n\(check.output)")

        // Every metric the alerts and the dashboard name is served (the
        // lease series by a controller of several: ClusterTests), and the
        // lease series only then.
        let served = scrape.names
        #expect(served.isDisjoint(with: DistFiles.clusterOnlyMetrics), "\(served.intersection(DistFiles.clusterOnlyMetrics))")
        for (file, names) in try DistFiles.referencedMetrics() {
            let missing = names.subtracting(served).subtracting(DistFiles.clusterOnlyMetrics).sorted()
            #expect(missing.isEmpty, "\(file) names metrics the controller does not serve: \(missing)")
        }

        // A reload that fails says so; the last success stays.
        try "store: store.db\nproviders: [oops\n".write(toFile: h.configPath, atomically: true, encoding: .utf8)
        kill(controller.pid, SIGHUP)
        let failed = try await controller.stderrLines.waitForLine(containing: "config not reloaded")
        // Reloads run one at a time: once the next one begins, the failed
        // one has been counted.
        kill(controller.pid, SIGHUP)
        _ = try await controller.stderrLines.waitForLine(containing: "reloading the config", from: failed.index + 1)
        let afterReload = try Scrape(try #require(try await HTTP.get(port: port, path: "/metrics").components(separatedBy: "\r\n\r\n").last))
        #expect(afterReload.value("instancepoller_config_last_reload_successful") == 0)
        #expect(afterReload.value("instancepoller_config_last_reload_success_timestamp_seconds") == loaded)
        #expect(try await h.stop(controller) == 0)
    }

    /// `instancepoller_machines_overdue` in the real loop, as the
    /// InstancePollerMachinesOverdue alert reads it: a shim that cannot start
    /// leaves every machine of its provider overdue; once it serves again,
    /// they are polled and none is.
    @Test func machinesAreOverdueWhileTheirShimIsDownAndNotOnceItServes() async throws {
        let h = try ControllerHarness()
        defer { h.remove() }
        let scenario = try h.scenario("cloud", ControllerHarness.runningInstances([(id: "c-1", address: "10.1.0.1"), (id: "c-2", address: "10.1.0.2")]))
        // The shim starts only while the file `go` exists; else it exits 3
        // (and is restarted with backoff).
        let go = h.directory.file("go")
        let shim = BuiltProducts.path(of: "provider-shim")
        try """
            store: store.db
            runtime_directory: run
            \(ControllerHarness.fastSettings)
            metrics:
              address: 127.0.0.1:0
            providers:
              cloud:
                shim:
                  command: /bin/sh
                  args: ["-c", "if [ -e '\(go)' ]; then exec '\(shim)' fake --scenario '\(scenario)'; fi; echo 'cloud SDK: no region' >&2; exit 3"]
                cloud:
                  type: fake
            credentials:
              - provider: cloud
                name: main
                auth_type: token
                attributes: {token: letmein}

            """.write(toFile: h.configPath, atomically: true, encoding: .utf8)
        let controller = try await h.start()
        let port = try await FaultInjectionTests.metricsPort(controller)
        try await h.add("m1", provider: "cloud", instance: "c-1")
        try await h.add("m2", provider: "cloud", instance: "c-2")

        // Never polled, due 100 ms after they were seen: overdue.
        let down = try await controller.stderrLines.waitForLine("both machines overdue", .seconds(30)) {
            $0.contains("msg=\"machines overdue\"") && $0.contains("cloud=2")
        }
        let whileDown = try Scrape(try #require(try await HTTP.get(port: port, path: "/metrics").components(separatedBy: "\r\n\r\n").last))
        #expect(whileDown.value("instancepoller_machines_overdue", ["provider": "cloud"]) == 2)
        #expect(whileDown.value("instancepoller_shim_up", ["provider": "cloud"]) == 0)
        #expect(whileDown.series("instancepoller_last_successful_poll_timestamp_seconds").isEmpty, "no batch has been polled")

        // The shim serves: the machines are polled and no longer overdue.
        try Data().write(to: URL(fileURLWithPath: go))
        _ = try await controller.stderrLines.waitForLine(from: down.index + 1, "no machine overdue", .seconds(30)) {
            $0.contains("msg=\"machines overdue\"") && $0.contains("cloud=0")
        }
        try await h.waitForMachines("both machines polled through the shim") {
            $0["m1"]?.addressValues == ["10.1.0.1"] && $0["m2"]?.addressValues == ["10.1.0.2"]
        }
        let serving = try Scrape(try #require(try await HTTP.get(port: port, path: "/metrics").components(separatedBy: "\r\n\r\n").last))
        #expect(serving.value("instancepoller_machines_overdue", ["provider": "cloud"]) == 0)
        #expect(serving.value("instancepoller_shim_up", ["provider": "cloud"]) == 1)
        #expect((serving.value("instancepoller_last_successful_poll_timestamp_seconds", ["provider": "cloud"]) ?? 0) > 0)
        #expect(try await h.stop(controller) == 0)
    }

    @Test func theAlertRulesPassPromtoolCheckAndTheirUnitTests() async throws {
        let promtool = try Promtool.path()
        let check = try await Promtool.run(promtool, ["check", "rules", DistFiles.alerts])
        #expect(check.status == 0, "promtool check rules:\n\(check.output)")
        #expect(check.output.contains("SUCCESS"), "promtool check rules:\n\(check.output)")
        let test = try await Promtool.run(promtool, ["test", "rules", DistFiles.alertTests])
        #expect(test.status == 0, "promtool test rules:\n\(test.output)")
        #expect(test.output.contains("SUCCESS"), "promtool test rules:\n\(test.output)")
    }

    @Test func theDashboardIsGrafanaJSONWithAPrometheusDatasourceAndAProviderVariable() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: DistFiles.dashboard))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect((dashboard["schemaVersion"] as? Int).map { $0 >= 36 } == true)
        let inputs = dashboard["__inputs"] as? [[String: Any]] ?? []
        #expect(inputs.contains { $0["name"] as? String == "DS_PROMETHEUS" && $0["pluginId"] as? String == "prometheus" })
        let variables = (dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        let provider = try #require(variables.first { $0["name"] as? String == "provider" })
        #expect("\(provider["query"] ?? "")".contains("label_values(instancepoller_polls_total, provider)"))
        let panels = DistFiles.panels(dashboard)
        #expect(panels.count >= 12)
        for panel in panels where panel["type"] as? String != "row" {
            let datasource = panel["datasource"] as? [String: Any]
            #expect(datasource?["uid"] as? String == "${DS_PROMETHEUS}", "panel \(panel["title"] ?? "?") has no Prometheus datasource")
        }
    }
}

/// promtool, as scripts/test installs it (Debian `prometheus`).
enum Promtool {
    struct Missing: Error, CustomStringConvertible {
        var description: String
    }

    static func path() throws -> String {
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"]
        guard let found = directories.map({ "\($0)/promtool" }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw Missing(description: "promtool is not installed: install the Debian package prometheus (scripts/test does)")
        }
        return found
    }

    /// Runs promtool in the repository; returns its status and its stdout
    /// and stderr together.
    static func run(_ promtool: String, _ arguments: [String], stdin: String? = nil) async throws -> (status: Int32, output: String) {
        let child = try await ChildProcess.spawn(promtool, arguments, workingDirectory: BuiltProducts.repositoryRoot)
        if let stdin { child.writeStdin(stdin) }
        child.closeStdin()
        let status = try await child.waitForExit(.seconds(60))
        let output = try await child.output()
        return (status, output.stdout + output.stderr)
    }
}

/// The text exposition format, parsed into samples (tests only).
struct Scrape {
    struct Sample {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    let samples: [Sample]

    init(_ text: String) throws {
        var samples: [Sample] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && !line.isEmpty {
            guard let match = line.wholeMatch(of: /([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/), let value = Double(match.3) else {
                throw Malformed(description: "not a sample: \(line)")
            }
            var labels: [String: String] = [:]
            if let body = match.2 {
                for pair in body.matches(of: /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/) { labels[String(pair.1)] = String(pair.2) }
            }
            samples.append(Sample(name: String(match.1), labels: labels, value: value))
        }
        self.samples = samples
    }

    var names: Set<String> { Set(samples.map(\.name)) }

    func series(_ name: String) -> [Sample] { samples.filter { $0.name == name } }

    /// The value of the one sample of `name` whose labels include `labels`.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = series(name).filter { sample in labels.allSatisfy { sample.labels[$0.key] == $0.value } }
        return matching.count == 1 ? matching[0].value : nil
    }
}

/// The operator files in dist/.
enum DistFiles {
    /// Served only by a controller that shares a PostgreSQL store with
    /// others (docs/DESIGN.md §8).
    static let clusterOnlyMetrics: Set<String> = [
        "instancepoller_leases_held", "instancepoller_cluster_controllers",
        "instancepoller_lease_renewal_failures_total", "instancepoller_leases_lost_total",
    ]
    static var alerts: String { "dist/prometheus/instancepoller-alerts.yml" }
    static var alertTests: String { "dist/prometheus/instancepoller-alerts.test.yml" }
    static var dashboard: String { BuiltProducts.repositoryRoot + "/dist/grafana/instancepoller.json" }

    /// Every panel, those in rows included.
    static func panels(_ dashboard: [String: Any]) -> [[String: Any]] {
        var all: [[String: Any]] = []
        for panel in dashboard["panels"] as? [[String: Any]] ?? [] {
            all.append(panel)
            all += panel["panels"] as? [[String: Any]] ?? []
        }
        return all
    }

    /// The metric names (instancepoller_*, process_*) in the alert rules
    /// and in the dashboard's queries, by file.
    static func referencedMetrics() throws -> [(file: String, names: Set<String>)] {
        let rules = try String(contentsOfFile: BuiltProducts.repositoryRoot + "/" + alerts, encoding: .utf8)
        let data = try Data(contentsOf: URL(fileURLWithPath: dashboard))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        var queries: [String] = []
        for panel in panels(json) {
            for target in panel["targets"] as? [[String: Any]] ?? [] { queries.append(target["expr"] as? String ?? "") }
        }
        for variable in (json["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? [] {
            queries.append("\(variable["query"] ?? "")")
        }
        func names(_ texts: [String]) -> Set<String> {
            Set(texts.flatMap { $0.matches(of: /\b(?:instancepoller|process)_[a-z_]+/).map { String($0.0) } })
        }
        let fromRules = names([rules])
        let fromDashboard = names(queries)
        #expect(!fromRules.isEmpty && !fromDashboard.isEmpty, "no metric names found in \(alerts) or \(dashboard)")
        return [(alerts, fromRules), ("dist/grafana/instancepoller.json", fromDashboard)]
    }
}
