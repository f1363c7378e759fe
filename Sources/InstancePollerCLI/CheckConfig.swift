import ArgumentParser
import Controller
import Core
import Foundation
import Logging
import Support

/// `instancepoller check-config FILE`: what the controller would refuse or
/// trip over in a config, every problem at once (like `promtool check
/// config` or `nginx -t`), without disturbing a running controller.
struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check a config file as the controller would read it, listing every problem.",
        discussion: """
            Reads FILE as `instancepoller run` does (the file's owner and mode, every key, the credential files and \
            the metrics token with their modes), resolves each provider's shim command, and checks the store \
            (SQLite: its directory; PostgreSQL: the password file), the credential key file and the runtime \
            directory (creatable, private, not held by a running controller; nothing is created or taken). \
            With --connect it also starts each provider's shim (sockets in a private temporary directory), calls \
            Health and ValidateCredential for each configured credential, and stops the shims.

            Prints a summary on stdout, ending with `config OK`. Each problem is one line on stderr, \
            `FILE:LINE: what is wrong` (`FILE: what is wrong` when no line applies); warnings are lines on stderr starting `warning: `. \
            With --format json or yaml the summary is one document on stdout with the same problems under `problems`.

            Exit status: 0 no problem; 1 problems found (each listed); 2 usage error (bad arguments, FILE cannot be read).
            """
    )

    @Argument(help: ArgumentHelp("The config file.", valueName: "FILE"))
    var file: String

    @Flag(help: "Also start each provider's shim, call Health and ValidateCredential for each credential, and stop the shims.")
    var connect = false

    @Option(help: "Output: table (a summary for people), json or yaml (one document for scripts).")
    var format: OutputFormat = .table

    func validate() throws {
        if format == .jsonl { throw ValidationError("--format jsonl does not apply: check-config prints one document (use json or yaml)") }
    }

    func run() async throws {
        // Credential files hold secrets: no core file, no tracing, first.
        do {
            try Hardening.apply()
        } catch let error as CLIError {
            Output.errorLine("instancepoller: \(error.message)")
            throw ExitCode(1)
        }
        var check: ConfigCheck
        do {
            check = try ConfigCheck.run(path: file)
        } catch {
            Output.errorLine("instancepoller: \(error)")
            throw ExitCode(2)
        }
        var connected: (shims: [ConfigCheck.ShimVerdict], credentials: [ConfigCheck.CredentialVerdict])?
        if connect, let config = check.config {
            let logger = Logger(label: "instancepoller-check") { _ in SwiftLogNoOpLogHandler() }
            let found = await ConfigCheck.connect(config, logger: logger)
            connected = found
            for shim in found.shims {
                if let problem = shim.problem {
                    check.problems.append(.init(file: file, line: check.line(ofKeys: ["providers", shim.provider]), problem: problem))
                }
            }
            for credential in found.credentials where credential.outcome != .valid {
                check.problems.append(.init(
                    file: file, line: check.credentialLines["\(credential.provider)/\(credential.name)"] ?? 0,
                    problem: "credential \(credential.provider)/\(credential.name) is \(credential.outcome.rawValue): \(credential.reason)"
                ))
            }
        }
        for problem in check.problems { Output.errorLine(problem.description) }
        for warning in check.warnings { Output.errorLine("warning: \(TextEscaping.oneLine(warning))") }
        if format.isStructured {
            try Output.json(text: Self.document(check, connected: connected), format)
        } else {
            Self.summary(check, connected: connected)
        }
        if !check.problems.isEmpty {
            if !format.isStructured {
                Output.errorLine("\(check.problems.count) problem\(check.problems.count == 1 ? "" : "s") in \(file)")
            }
            throw ExitCode(1)
        }
        if !format.isStructured { Output.line("config OK") }
    }

    // MARK: - The summary

    static let providerHeader = ["PROVIDER", "CLOUD", "SHORT", "BACKOFF", "CAP", "LONG", "JITTER", "IDS", "TIMEOUT", "SHIM"]

    static func summary(_ check: ConfigCheck, connected: (shims: [ConfigCheck.ShimVerdict], credentials: [ConfigCheck.CredentialVerdict])?) {
        Output.line("config       \(check.file)")
        guard let config = check.config else { return }
        let store = config.postgres != nil ? "postgres \(config.storePath)" : "sqlite \(config.storePath)"
        Output.line("store        \(check.skipped.contains("store") ? "(not checked: see the problems)" : store)")
        let inUse = check.runtimeDirectoryInUse ? " (in use by a running controller)" : ""
        Output.line("runtime dir  \(config.runtimeDirectory)\(inUse)")
        let token = config.metricsBearerTokenFile == nil ? "" : " (bearer token required)"
        Output.line("metrics      \(config.metricsAddress.map { "http://\($0)/metrics\(token)" } ?? "off")")
        let names = config.credentials.map { "\($0.provider)/\($0.name)" }
        Output.line("credentials  \(names.count)\(names.isEmpty ? "" : " (\(names.joined(separator: ", ")))")")
        let broken = check.brokenProviders.sorted()
        Output.line("providers    \(config.providers.count)\(broken.isEmpty ? "" : " (\(broken.joined(separator: ", ")) not checked: see the problems)")")
        Output.table(providerHeader, config.providers.map { provider in
            let poll = effectivePoll(config, provider)
            return [provider.name, provider.cloud.type, duration(poll.settings.shortPoll), String(format: "%g", poll.settings.backoffFactor),
                    duration(poll.settings.shortPollCap), duration(poll.settings.longPoll), String(format: "%g", poll.settings.longPollJitter),
                    "\(poll.settings.maxIDsPerCall)", duration(poll.callTimeout) + (poll.own ? " (own poll:)" : ""),
                    TextEscaping.oneLine(([provider.shim.executable] + provider.shim.arguments).joined(separator: " "))]
        })
        guard let connected else { return }
        Output.line()
        Output.table(["SHIM", "STARTED", "HEALTH"], connected.shims.map { shim in
            [shim.provider, shim.shim ?? "no", shim.problem == nil ? "serving" : "see the problems"]
        })
        if !connected.credentials.isEmpty {
            Output.line()
            Output.table(["CREDENTIAL", "RESULT", "REASON"], connected.credentials.map { credential in
                ["\(credential.provider)/\(credential.name)", credential.outcome.rawValue, credential.reason.isEmpty ? "-" : TextEscaping.oneLine(credential.reason)]
            })
        }
    }

    /// The poll settings and call timeout a provider polls with, and whether
    /// they come from its own `poll:` block.
    static func effectivePoll(_ config: ControllerConfig, _ provider: ProviderConfig) -> (settings: PollSettings, callTimeout: Duration, own: Bool) {
        (config.providerPollSettings[provider.name] ?? config.poll,
         config.providerCallTimeouts[provider.name] ?? config.callTimeout,
         provider.poll != nil)
    }

    static func duration(_ value: Duration) -> String {
        let (seconds, attoseconds) = value.components
        return Output.duration(nanoseconds: seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    // MARK: - The document (json, yaml)

    static func document(_ check: ConfigCheck, connected: (shims: [ConfigCheck.ShimVerdict], credentials: [ConfigCheck.CredentialVerdict])?) throws -> String {
        var object: [String: Any] = [
            "config": check.file,
            "ok": check.problems.isEmpty,
            "problems": check.problems.map { problem -> [String: Any] in
                var entry: [String: Any] = ["file": problem.file, "message": problem.description, "problem": problem.problem]
                if problem.line > 0 { entry["line"] = problem.line }
                return entry
            },
            "warnings": check.warnings,
        ]
        if let config = check.config {
            object["store"] = check.skipped.contains("store") ? NSNull() : [
                "kind": config.postgres == nil ? "sqlite" : "postgres", "location": config.storePath,
            ] as [String: Any]
            object["runtime_directory"] = ["path": config.runtimeDirectory, "in_use": check.runtimeDirectoryInUse] as [String: Any]
            object["metrics_address"] = config.metricsAddress ?? NSNull()
            object["providers"] = config.providers.map { provider -> [String: Any] in
                let poll = effectivePoll(config, provider)
                return [
                    "name": provider.name,
                    "cloud_type": provider.cloud.type,
                    "shim": ["command": provider.shim.executable, "args": provider.shim.arguments] as [String: Any],
                    "own_poll": poll.own,
                    "poll": [
                        "short_poll": duration(poll.settings.shortPoll), "backoff_factor": poll.settings.backoffFactor,
                        "short_poll_cap": duration(poll.settings.shortPollCap), "long_poll": duration(poll.settings.longPoll),
                        "long_poll_jitter": poll.settings.longPollJitter, "max_ids_per_call": poll.settings.maxIDsPerCall,
                        "call_timeout": duration(poll.callTimeout),
                    ] as [String: Any],
                ]
            }
            object["not_checked"] = (check.skipped.sorted() + check.brokenProviders.sorted().map { "providers.\($0)" })
            object["credentials"] = config.credentials.map { credential -> [String: Any] in
                var entry: [String: Any] = ["provider": credential.provider, "name": credential.name, "auth_type": credential.authType]
                if let verdict = connected?.credentials.first(where: { $0.provider == credential.provider && $0.name == credential.name }) {
                    entry["result"] = verdict.outcome.rawValue
                    if !verdict.reason.isEmpty { entry["reason"] = verdict.reason }
                }
                return entry
            }
        }
        if let connected {
            object["shims"] = connected.shims.map { shim -> [String: Any] in
                var entry: [String: Any] = ["provider": shim.provider, "started": shim.shim != nil]
                if let name = shim.shim { entry["shim"] = name }
                if let problem = shim.problem { entry["problem"] = problem }
                return entry
            }
        }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}
