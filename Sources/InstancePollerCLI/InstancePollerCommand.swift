import ArgumentParser

/// `instancepoller`: the controller binary.
@main
struct InstancePollerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "instancepoller",
        abstract: "Keeps a fleet's machine records true to the clouds they run on.",
        discussion: "Start the controller with `instancepoller run --config FILE` (see config/example.yaml).",
        version: "0.1.0",
        subcommands: [Run.self]
    )
}
