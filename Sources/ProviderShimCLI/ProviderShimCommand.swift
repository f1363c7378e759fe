import ArgumentParser
import Core
import Foundation
import Logging
import ProviderShim

/// `provider-shim`: the built-in provider backends, one per subcommand, each
/// serving the provider contract on INSTANCEPOLLER_SOCKET.
@main
struct ProviderShimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "provider-shim",
        abstract: "Serves a cloud backend to instancepoller over the provider contract.",
        discussion: """
            The controller starts a shim with INSTANCEPOLLER_SOCKET naming the socket to listen on \
            and stdin as a pipe; the shim prints one handshake line on stdout and logs to stderr. \
            See proto/PROTOCOL.md.
            """,
        version: "0.1.0",
        subcommands: [Fake.self]
    )
}

/// Options every backend takes.
struct ShimOptions: ParsableArguments {
    @Option(help: "Log level on stderr: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Seconds SIGTERM or Shutdown waits for calls in flight.")
    var drainTimeout: Double = 10

    func validate() throws {
        guard drainTimeout >= 0, drainTimeout.isFinite else { throw ValidationError("--drain-timeout must be ≥ 0 seconds") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func logger(_ label: String) -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        return Logger(label: label) { LineLogHandler(label: $0, level: level) }
    }

    func options(_ label: String) -> ShimProcess.Options {
        ShimProcess.Options(
            drainTimeout: .milliseconds(Int64(drainTimeout * 1000)),
            environment: ProcessInfo.processInfo.environment,
            logger: logger(label)
        )
    }
}

struct Fake: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A fake cloud driven by a scenario file, for tests and the demo.",
        discussion: "The scenario format is documented in scripts/scenarios/example.yaml."
    )

    @Option(help: "Scenario file (YAML or JSON).")
    var scenario: String

    @Flag(help: "Run timelines on a clock that moves only by FakeCloud.AdvanceClock.")
    var manualClock = false

    @Option(help: ArgumentHelp("Scenario time 0 is this wall-clock time (Unix seconds), so a restarted or swapped-in shim continues the timelines instead of starting them over.", valueName: "SECONDS"))
    var epoch: Double?

    func validate() throws {
        if epoch != nil, manualClock { throw ValidationError("--epoch and --manual-clock exclude each other") }
    }

    @OptionGroup var shim: ShimOptions

    func run() async throws {
        MallocTuning.tuneForLargeFrames()
        let loaded: FakeScenario
        do {
            loaded = try FakeScenario.load(path: scenario)
        } catch {
            FileHandle.standardError.write(Data("provider-shim fake: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let clock: any FakeClock = manualClock ? ManualFakeClock() : epoch.map { WallFakeClock(epochSeconds: $0) } ?? WallFakeClock()
        let status = await FakeShim.run(scenario: loaded, clock: clock, options: shim.options("fake"))
        throw ExitCode(status)
    }
}
