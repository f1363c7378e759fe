import Controller
import Foundation
import Testing
import TestSupport

/// dist/systemd/instancepoller.service, checked by systemd's own tools
/// (`systemd-analyze`, from Debian's systemd package, which scripts/test
/// installs) and against the real binary.
@Suite("The systemd unit file")
struct SystemdUnitTests {
    static let unitPath = BuiltProducts.repositoryRoot + "/dist/systemd/instancepoller.service"
    static let installedBinary = "/usr/local/bin/instancepoller"

    /// The unit's `[Service]` settings, key → values (a key may repeat).
    static func serviceSettings() throws -> [String: [String]] {
        let text = try String(contentsOfFile: unitPath, encoding: .utf8)
        var section = ""
        var settings: [String: [String]] = [:]
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("[") { section = line; continue }
            guard section == "[Service]", let equals = line.firstIndex(of: "=") else { continue }
            settings[String(line[..<equals]), default: []].append(String(line[line.index(after: equals)...]))
        }
        return settings
    }

    /// "60s", "2min", "90" (seconds) as a duration.
    static func seconds(_ text: String) -> Duration? {
        if text.hasSuffix("min"), let minutes = Int(text.dropLast(3)) { return .seconds(minutes * 60) }
        if text.hasSuffix("s"), let seconds = Int(text.dropLast()) { return .seconds(seconds) }
        return Int(text).map { .seconds($0) }
    }

    /// The unit with ExecStart= pointing at the built binary (verify wants
    /// the executable to exist), in `directory`.
    static func localCopy(in directory: TemporaryDirectory) throws -> String {
        let text = try String(contentsOfFile: unitPath, encoding: .utf8)
        let path = directory.file("instancepoller.service")
        try text.replacingOccurrences(of: installedBinary + " ", with: BuiltProducts.path(of: "instancepoller") + " ")
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func run(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let child = try await ChildProcess.spawn("/usr/bin/systemd-analyze", arguments)
        child.closeStdin()
        let status = try await child.waitForExit(.seconds(60))
        let output = try await child.output()
        return (status, output.stdout, output.stderr)
    }

    @Test func systemdAnalyzeVerifiesTheUnitWithoutAWord() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let unit = try Self.localCopy(in: directory)
        // --man=no: the man page is installed with the package, not here.
        let result = try await Self.run(["verify", "--man=no", unit])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty, "systemd-analyze verify warns: \(result.stderr)")
    }

    @Test func itsHardeningKeepsTheExposureLow() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let unit = try Self.localCopy(in: directory)
        // 0–100 (the 0–10 score shown, times ten); 3.2 today, "OK".
        let result = try await Self.run(["security", "--offline=true", "--threshold=35", unit])
        #expect(result.status == 0, "exposure above 3.5:\n\(result.stdout.split(separator: "\n").filter { $0.contains("✗") }.joined(separator: "\n"))")
    }

    @Test func theUnitSaysWhatTheControllerNeeds() throws {
        let settings = try Self.serviceSettings()
        func value(_ key: String) -> String? { settings[key]?.last }
        #expect(value("Type") == "notify")
        #expect(value("NotifyAccess") == "main")
        #expect(value("ExecReload") == "/bin/kill -HUP $MAINPID")
        #expect(value("RuntimeDirectory") == "instancepoller")
        #expect(value("RuntimeDirectoryMode") == "0700")
        #expect(value("StateDirectory") == "instancepoller")
        #expect(value("StateDirectoryMode") == "0700")
        #expect(value("Restart") == "on-failure")
        #expect(value("KillMode") == "mixed", "the controller stops its shims itself")
        #expect(value("User") == "instancepoller" && value("DynamicUser") == nil)
        #expect(value("UMask") == "0077")
        #expect(value("CapabilityBoundingSet") == "")
        for (key, wanted) in [
            ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"), ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"),
            ("ProtectControlGroups", "yes"), ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"), ("RestrictNamespaces", "yes"),
            ("LockPersonality", "yes"), ("MemoryDenyWriteExecute", "yes"), ("SystemCallArchitectures", "native"),
        ] {
            #expect(value(key) == wanted, "\(key)=\(value(key) ?? "(missing)")")
        }
        #expect(settings["SystemCallFilter"] == nil && settings["NoExecPaths"] == nil, "the shims are exec'd")

        // The watchdog outlasts the poll loop's longest silence with the
        // default call timeout (docs/DESIGN.md §6.6).
        let watchdog = try #require(value("WatchdogSec").flatMap(Self.seconds))
        #expect(watchdog >= defaultPollStallLimit())
        // The stop outlasts the controller's graceful stop with the default settings.
        let supervision = SupervisionSettings()
        let graceful = Duration.seconds(2 + 2 + 5) + MetricsServer.hangUpGrace + supervision.drainTimeout + supervision.exitGrace * 3
        let stop = try #require(value("TimeoutStopSec").flatMap(Self.seconds))
        #expect(stop > graceful)
    }

    /// The default poll loop bound: a watch interval (1 s) and two call
    /// timeouts (30 s each).
    func defaultPollStallLimit() -> Duration { .seconds(1) + .seconds(30) * 2 }

    @Test func execStartParsesWithTheRealBinary() async throws {
        let settings = try Self.serviceSettings()
        let execStart = try #require(settings["ExecStart"]?.last)
        var words = execStart.split(separator: " ").map(String.init)
        #expect(words.first == Self.installedBinary)
        #expect(words.dropFirst().first == "run")
        let configAt = try #require(words.firstIndex(of: "--config"))
        #expect(words[configAt + 1] == "/etc/instancepoller/config.yaml")
        // The same arguments with a config that is not there: a config error
        // (2, naming the file), not a usage error.
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        words[configAt + 1] = directory.file("config.yaml")
        let child = try await ChildProcess.spawn(BuiltProducts.path(of: "instancepoller"), Array(words.dropFirst()))
        child.closeStdin()
        #expect(try await child.waitForExit() == 2)
        let stderr = try await child.output().stderr
        #expect(stderr.hasPrefix("instancepoller: \(directory.file("config.yaml"))"), "\(stderr)")
        #expect(!stderr.contains("Usage:"))
    }
}
