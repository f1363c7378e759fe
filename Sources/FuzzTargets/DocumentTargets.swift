internal import Controller
internal import Core
internal import ProviderShim
internal import Support
internal import FakeProvider

/// The YAML documents an operator or a test writes: the controller's config
/// and the fake cloud's scenario.
///
/// Properties: a document is either read or refused with one
/// ``YAMLFileError`` on one line that names the file and a line of it; a
/// config that is read keeps the promises the controller relies on.
enum DocumentTargets {
    /// Relative paths in a fuzzed config resolve inside this directory,
    /// which does not exist.
    static let configFile = "/nonexistent/instancepoller-fuzz/config.yaml"
    static let scenarioFile = "/nonexistent/instancepoller-fuzz/scenario.yaml"

    static func config(_ input: [UInt8]) throws(FuzzPropertyViolation) {
        try read(input, as: .config, file: configFile) { text in
            try check(try ControllerConfig.parse(text, file: configFile, environment: ["PATH": "/nonexistent"]))
        }
    }

    static func scenario(_ input: [UInt8]) throws(FuzzPropertyViolation) {
        try read(input, as: .scenario, file: scenarioFile) { text in
            let scenario = try FakeScenario.parse(text, file: scenarioFile)
            guard Set(scenario.instances.map(\.id)).count == scenario.instances.count else {
                throw FuzzPropertyViolation(.scenario, "read a scenario with two instances of one id")
            }
        }
    }

    /// Runs `parse` on the input as text: a document it reads must pass its
    /// checks, and one it refuses must be refused with a proper error.
    private static func read(
        _ input: [UInt8], as target: FuzzTarget, file: String, _ parse: (String) throws -> Void
    ) throws(FuzzPropertyViolation) {
        let text = String(decoding: input, as: UTF8.self)
        do {
            try parse(text)
        } catch let error as YAMLFileError {
            try check(error, text: text, file: file, target: target)
        } catch let violation as FuzzPropertyViolation {
            throw violation
        } catch {
            throw FuzzPropertyViolation(target, "threw \(type(of: error)), not a YAMLFileError: \(error)")
        }
    }

    private static func check(_ config: ControllerConfig) throws(FuzzPropertyViolation) {
        guard !config.providers.isEmpty else {
            throw FuzzPropertyViolation(.config, "read a config without providers")
        }
        guard Set(config.providers.map(\.name)).count == config.providers.count else {
            throw FuzzPropertyViolation(.config, "read a config with two providers of one name")
        }
        for provider in config.providers {
            for name in provider.environmentAllowlist where !ShimCommand.isPassable(name) {
                throw FuzzPropertyViolation(.config, "provider \(provider.name) may pass \"\(name)\" to its shim")
            }
            guard provider.shim.environment.keys.allSatisfy(provider.environmentAllowlist.contains) else {
                throw FuzzPropertyViolation(.config, "provider \(provider.name)'s shim gets variables outside its allowlist")
            }
        }
        for credential in config.credentials where config.provider(named: credential.provider) == nil {
            throw FuzzPropertyViolation(.config, "credential \(credential.name) names an unknown provider \(credential.provider)")
        }
        if let address = config.metricsAddress {
            guard let parsed = MetricsAddress.parse(address), MetricsAddress.isLoopback(parsed.host) else {
                throw FuzzPropertyViolation(.config, "metrics would be served on \(address), not on loopback")
            }
        }
    }

    private static func check(_ error: YAMLFileError, text: String, file: String, target: FuzzTarget) throws(FuzzPropertyViolation) {
        let message = error.description
        guard !message.contains(where: \.isNewline) else {
            throw FuzzPropertyViolation(target, "the error spans lines: \(message.debugDescription)")
        }
        guard message.hasPrefix(file) else {
            throw FuzzPropertyViolation(target, "the error does not start with the file's name: \(message.debugDescription)")
        }
        let lines = yamlLineCount(text)
        guard error.line >= 0, error.line <= lines + 1, error.column >= 0 else {
            throw FuzzPropertyViolation(target, "the error points at line \(error.line) column \(error.column) of a \(lines)-line text")
        }
    }

    /// Lines as YAML counts them: CR LF, CR, LF, NEL, LS and PS each end one.
    static func yamlLineCount(_ text: String) -> Int {
        var lines = 1
        var afterCR = false
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": if !afterCR { lines += 1 }
            case "\r", "\u{85}", "\u{2028}", "\u{2029}": lines += 1
            default: break
            }
            afterCR = scalar == "\r"
        }
        return lines
    }
}
