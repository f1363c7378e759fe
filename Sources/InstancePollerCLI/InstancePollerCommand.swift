import ArgumentParser

/// `instancepoller`: the controller binary. Its subcommands (run, demo,
/// status, machines, credentials, providers, watch) arrive with the
/// controller itself; see the README.
@main
struct InstancePollerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "instancepoller",
        abstract: "Keeps a fleet's machine records true to the clouds they run on.",
        version: "0.1.0"
    )
}
