import ArgumentParser
import Controller
import Core
import Foundation
import SwiftProtobuf
import Support
import ControlAPI

// MARK: - providers

struct Providers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List providers' shims, or swap one live.",
        subcommands: [ProvidersList.self, ProvidersSwap.self]
    )
}

struct ProvidersList: ControllerCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the providers and their shims.")

    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let answer = try await controller.call(ControlV1.listProviders, .init())
        if controller.format.isStructured { return try Output.json(answer, controller.format) }
        Self.render(answer.providers)
    }

    /// Widest COMMAND and LAST PROBLEM cells, and refused-swap lines; the
    /// full text is in `--format json`.
    static let commandWidth = 40
    static let problemWidth = 60
    static let refusedSwapWidth = 120

    /// The providers' table (also under `status`), then a line for each
    /// provider whose last swap was refused.
    static func render(_ providers: [ControlV1.ProviderInfo]) {
        for line in lines(providers) { Output.line(line) }
    }

    static func lines(_ providers: [ControlV1.ProviderInfo]) -> [String] {
        var lines = Output.tableLines(
            ["PROVIDER", "CLOUD", "STATE", "PID", "RESTARTS", "SHIM", "COMMAND", "LAST PROBLEM"],
            providers.map {
                [$0.name, $0.cloudType, state($0), $0.pid == 0 ? "-" : "\($0.pid)", "\($0.restarts)",
                 $0.shimName.isEmpty ? "-" : "\($0.shimName) \($0.shimVersion)",
                 Output.cut(([$0.command] + $0.args).joined(separator: " "), commandWidth),
                 problem($0)]
            }
        )
        for provider in providers where !provider.lastRefusedSwap.isEmpty {
            lines.append(Output.cut(
                "\(provider.name): swap refused at \(Output.time(provider.lastRefusedSwapUnixNano)): \(provider.lastRefusedSwap)", refusedSwapWidth
            ))
        }
        return lines
    }

    /// "running", "starting", "restarting, next start 2026-11-27T16:25:04Z".
    static func state(_ provider: ControlV1.ProviderInfo) -> String {
        guard provider.state == "restarting", provider.nextStartUnixNano != 0 else { return provider.state }
        return "restarting, next start \(Output.time(provider.nextStartUnixNano))"
    }

    /// "-", or "2026-11-27T16:25:02Z exited with status 2 before its han…".
    static func problem(_ provider: ControlV1.ProviderInfo) -> String {
        guard !provider.lastProblem.isEmpty else { return "-" }
        let text = provider.lastProblemUnixNano == 0 ? provider.lastProblem : "\(Output.time(provider.lastProblemUnixNano)) \(provider.lastProblem)"
        return Output.cut(text, problemWidth)
    }
}

struct ProvidersSwap: ControllerCommand {
    static let configuration = CommandConfiguration(
        commandName: "swap",
        abstract: "Swap a provider's shim live, without restarting the controller.",
        discussion: """
            The new shim is started, shaken hands with and must accept the provider's credentials before new \
            calls go to it; the old one finishes its calls in flight and is stopped, and every machine of the \
            provider is polled at once through the new one. If the new shim fails, the old one keeps serving \
            and the error says why. The new shim runs in this command's working directory, where its command \
            (when a relative path) and relative arguments are found. Example:
              instancepoller providers swap demo -- provider-shim fake --scenario other.yaml
            """
    )

    @Argument(help: "The provider.") var provider: String
    @Option(name: .customLong("env"), help: ArgumentHelp("An environment variable the new shim may see (repeat).", valueName: "NAME"))
    var environment: [String] = []
    @OptionGroup var controller: ControllerOptions
    @Argument(parsing: .postTerminator, help: "After --: the new shim's command and its arguments.")
    var command: [String] = []

    func validate() throws {
        guard !command.isEmpty else { throw ValidationError("give the new shim's command after --, e.g. -- provider-shim fake --scenario s.yaml") }
    }

    func execute() async throws {
        // The controller runs the shim here, and finds a relative command here.
        let directory = FileManager.default.currentDirectoryPath
        let answer = try await controller.call(ControlV1.swapProvider, .with {
            $0.provider = provider
            $0.command = command[0]
            $0.args = Array(command.dropFirst())
            $0.env = environment
            $0.workingDirectory = directory
        })
        if controller.format.isStructured { return try Output.json(answer.provider, controller.format) }
        Output.line("provider \(provider) swapped: shim pid \(answer.provider.pid) (\(answer.provider.shimName) \(answer.provider.shimVersion))")
    }
}

extension Output {
    /// `text` on one line, at most `limit` characters: a longer one is cut
    /// and ends with "…".
    static func cut(_ text: String, _ limit: Int) -> String {
        let line = TextEscaping.oneLine(text)
        guard line.count > limit, limit > 0 else { return line }
        return line.prefix(limit - 1) + "…"
    }
}
