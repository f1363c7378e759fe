import ArgumentParser
import Foundation

/// `instancepoller`: the controller binary and its CLI.
///
/// Exit status: 0 on success, 1 on failure, 2 on a usage error, each
/// failure with a one-line message on stderr.
@main
struct InstancePollerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "instancepoller",
        abstract: "Keeps a fleet's machine records true to the clouds they run on.",
        discussion: """
            Start the controller with `instancepoller run --config FILE` (config/example.yaml is a complete example), \
            or try everything at once with `instancepoller demo`. The other commands talk to a running controller \
            through control.sock in its runtime directory (--runtime-dir or --config finds it).
            """,
        version: "0.1.0",
        subcommands: [Run.self, Demo.self, Status.self, Machines.self, Credentials.self, Providers.self, Watch.self, DemoFakeShim.self]
    )

    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                // Usage errors: one line and status 2 (the full usage is in --help).
                let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "bad arguments"
                FileHandle.standardError.write(Data("instancepoller: \(message) (see instancepoller --help)\n".utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
