import ArgumentParser
import Controller
import Core
import Foundation
import Logging
import ProviderShim
import SwiftProtobuf
import Support
import ControlAPI
import FakeProvider

/// `instancepoller demo`: the whole system on a built-in fleet, no set-up.
///
/// A temporary directory holds the store, the runtime directory and two fake
/// clouds' scenarios; the controller runs in this process and supervises two
/// fake shims (this same binary, `instancepoller _fake-shim`). A script then
/// walks through what an operator sees: machines come up and gain
/// addresses, a credential is broken and mended, a shim is killed and comes
/// back, and a provider is swapped live. Everything is removed at the end.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the controller on a built-in fleet of 20 machines on two fake clouds and watch it work.",
        discussion: "Ctrl-C ends it cleanly. Nothing is left behind: the store and sockets live in a temporary directory."
    )

    @Option(help: "Seconds to run (the script needs about 40).")
    var duration: Double = 45

    @Flag(help: "Print events as plain lines even on a terminal.")
    var plain = false

    func validate() throws {
        guard duration > 0, duration.isFinite, duration <= 86_400 else { throw ValidationError("--duration must be more than 0 and at most 86400 seconds") }
    }

    func run() async throws {
        // The demo runs a controller in this process, with its credentials.
        do {
            try ProcessHardening.forbidDumpsAndTracing()
        } catch {
            FileHandle.standardError.write(Data("instancepoller demo: \(error)\n".utf8))
            throw ExitCode(1)
        }
        MallocTuning.tune(for: .controller)
        let directory: String
        do {
            directory = try DemoFleet.makeDirectory()
        } catch {
            FileHandle.standardError.write(Data("instancepoller demo: \(error)\n".utf8))
            throw ExitCode(1)
        }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = try DemoFleet.write(into: directory, shim: DemoFleet.ownExecutable())
        let logPath = "\(directory)/controller.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil, attributes: [.posixPermissions: 0o600])
        let logFile = open(logPath, O_WRONLY | O_APPEND | O_CLOEXEC)
        defer { close(logFile) }
        let logger = Logger(label: "instancepoller") { LineLogHandler(label: $0, level: .info, fileDescriptor: logFile) }

        let screen = DemoScreen(live: !plain && isatty(1) == 1, start: ContinuousClock.now)
        screen.note("working in \(directory) (removed at the end)")
        let seconds = duration
        do {
            try await ControllerRuntime.run(
                config: config, logger: logger, environment: [:],
                onStarted: { started in
                    await DemoScript(socket: started.controlSocket, directory: directory, screen: screen, duration: seconds).run()
                },
                until: { try? await Task.sleep(for: .seconds(seconds)) },
                build: .current
            )
        } catch {
            screen.finish()
            FileHandle.standardError.write(Data("instancepoller demo: \(error)\n".utf8))
            throw ExitCode(1)
        }
        screen.finish()
        Output.line("demo finished: the shims are stopped and \(directory) is removed")
    }
}
