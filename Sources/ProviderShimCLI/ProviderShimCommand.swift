import ArgumentParser

/// `provider-shim`: the built-in provider backends (fake, ec2), one per
/// subcommand, each serving the provider contract on INSTANCEPOLLER_SOCKET.
@main
struct ProviderShimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "provider-shim",
        abstract: "Serves a cloud backend to instancepoller over the provider contract.",
        version: "0.1.0"
    )
}
