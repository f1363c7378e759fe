import ArgumentParser
import Controller
import Core
import Foundation
import Logging
import Support

/// `instancepoller run`: the controller, until SIGTERM or SIGINT.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the controller: supervise the provider shims and poll every machine.",
        discussion: """
            SIGTERM or SIGINT stops it cleanly (shims shut down, sockets removed, store closed). \
            SIGHUP reads the config again: a provider whose shim command changed is swapped live, \
            new providers start, removed ones stop.
            """
    )

    static let defaultConfigPath = "/etc/instancepoller/config.yaml"

    @Option(name: .long, help: ArgumentHelp("The config file.", valueName: "FILE"))
    var config: String = Run.defaultConfigPath

    @Option(help: "Overrides the config's log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    func validate() throws {
        if let logLevel, Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        // Before any secret is read: no core file, no ptrace or
        // /proc/<pid>/mem by other processes of this uid.
        do {
            try ProcessHardening.forbidDumpsAndTracing()
        } catch {
            FileHandle.standardError.write(Data("instancepoller: \(error)\n".utf8))
            throw ExitCode(1)
        }
        MallocTuning.tune(for: .controller)
        let loaded: ControllerConfig
        do {
            loaded = try ControllerConfig.load(path: config)
        } catch {
            var message = "instancepoller: \(error)"
            if error.line == 0, config == Run.defaultConfigPath, !FileManager.default.fileExists(atPath: config) {
                message = "instancepoller: no config at \(config); pass --config FILE (config/example.yaml is a complete example)"
            }
            FileHandle.standardError.write(Data((message + "\n").utf8))
            throw ExitCode(2)
        }
        let level = logLevel.flatMap(Logger.Level.init(rawValue:)) ?? loaded.logLevel
        let format: LineLogHandler.Format = loaded.logFormat == .json ? .json : .human
        let logger = Logger(label: "instancepoller") { LineLogHandler(label: $0, level: level, format: format) }
        do {
            try await ControllerRuntime.run(
                config: loaded, logger: logger, environment: ProcessInfo.processInfo.environment, build: BuildInfo.current)
        } catch let error as ControllerRuntime.StartFailure {
            // It never started (e.g. another controller holds the runtime
            // directory): one line says why, not a log line and the same again.
            FileHandle.standardError.write(Data("instancepoller: \(error)\n".utf8))
            throw ExitCode(1)
        } catch {
            logger.critical("controller stopped: \(error)")
            FileHandle.standardError.write(Data("instancepoller: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
