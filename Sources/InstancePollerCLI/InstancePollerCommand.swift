import ArgumentParser
import Core
import Controller
import Foundation
import Support

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
            through control.sock in its runtime directory: --runtime-dir DIR, else --config FILE's \
            runtime_directory, else $INSTANCEPOLLER_RUNTIME_DIR, else $RUNTIME_DIRECTORY (set by systemd's \
            RuntimeDirectory=), else /run/instancepoller for root and for the user that owns it (the systemd \
            unit's), else $XDG_RUNTIME_DIR/instancepoller or /tmp/instancepoller-UID. The controller itself \
            defaults to the same, /run/instancepoller only for root. Its store defaults to instancepoller.db in \
            $STATE_DIRECTORY (set by systemd's StateDirectory=), else /var/lib/instancepoller for root, else \
            $XDG_STATE_HOME/instancepoller or ~/.local/state/instancepoller.

            Exit status: 0 success; 1 failure; 2 usage error (each failure with one line on stderr saying \
            what was wrong); 141 when the output's reader went away (e.g. `| head`).
            """,
        version: BuildInfo.current.versionLine,
        subcommands: [Run.self, CheckConfig.self, Demo.self, Status.self, Machines.self, Credentials.self, Providers.self, Watch.self, DemoFakeShim.self]
    )

    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        let path = CommandPath(arguments)
        if let problem = path.problem {
            usageFailure(problem)
        }
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                // Usage errors: one line and status 2, pointing to the help
                // of the command that was given.
                let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "bad arguments"
                usageFailure("\(message) (see \(path.names.joined(separator: " ")) --help)")
            }
            exit(withError: error)
        }
    }

    static func usageFailure(_ message: String) -> Never {
        Output.errorLine("instancepoller: \(message)")
        Foundation.exit(2)
    }
}

/// The subcommands named at the start of the arguments
/// (`machines add …` → instancepoller machines add), and the usage
/// mistakes ArgumentParser would report poorly.
struct CommandPath {
    /// "instancepoller", "machines", "add".
    var names: [String]
    /// A one-line usage error, or nil.
    var problem: String?

    /// Commands whose arguments start with a machine id.
    static let takingMachineIDs: Set<[String]> = [
        ["instancepoller", "machines", "add"], ["instancepoller", "machines", "remove"],
        ["instancepoller", "machines", "show"], ["instancepoller", "machines", "set-agent-status"],
    ]

    init(_ arguments: [String]) {
        var names = [InstancePollerCommand._commandName]
        var subcommands = InstancePollerCommand.configuration.subcommands
        var rest = arguments[...]
        while let next = rest.first {
            guard let subcommand = subcommands.first(where: { $0._commandName == next }) else { break }
            names.append(next)
            subcommands = subcommand.configuration.subcommands
            rest = rest.dropFirst()
        }
        self.names = names
        self.problem = Self.problem(names: names, subcommands: subcommands, rest: Array(rest))
    }

    static func problem(names: [String], subcommands: [any ParsableCommand.Type], rest: [String]) -> String? {
        let visible = subcommands.filter { $0.configuration.shouldDisplay }.map { $0._commandName }
        if let next = rest.first, !visible.isEmpty, !next.hasPrefix("-"), next != "help" {
            // ArgumentParser says "Unexpected argument": say what there is.
            let command = names.last ?? "instancepoller"
            return "unknown subcommand \(MachineFields.quoted(next)) (\(command) has: \(visible.joined(separator: ", ")))"
        }
        guard takingMachineIDs.contains(names) else { return nil }
        // "-dash" would be read as the flags -d -a -s -h (help, exit 0).
        let options = rest.prefix { $0 != "--" }
        guard let dashed = options.first(where: { $0.count > 1 && $0.hasPrefix("-") && !$0.hasPrefix("--") && $0 != "-h" }) else { return nil }
        return "\(MachineFields.quoted(dashed)) looks like an option; to use it as a machine id, put -- before it (after the options)"
    }
}
