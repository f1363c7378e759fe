import ArgumentParser
import Core
import Foundation
import Logging
import ProviderShim
import CloudSupport
import Support
import FakeProvider
import EC2Provider
import VSphereProvider

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
        version: BuildInfo.current.versionLine,
        subcommands: [Fake.self, EC2.self, VSphere.self]
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

    /// A setting read from the environment the controller passes (the
    /// provider's `env:` list); a bad value stops the shim before its
    /// handshake, in one line naming the variable.
    func fromEnvironment<T>(_ backend: String, _ options: ShimProcess.Options, _ read: ([String: String]) throws -> T) throws -> T {
        do {
            return try read(options.environment)
        } catch {
            ShimProcess.printError("provider-shim \(backend): \(error)")
            throw ExitCode(ShimProcess.ExitStatus.usage)
        }
    }

    /// A real cloud backend's HTTP client, routed through the proxies the
    /// environment names (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), and traced
    /// when the controller passed the OTLP settings (OTEL_*).
    func httpClient(_ backend: String, _ options: ShimProcess.Options) throws -> CloudHTTPClient {
        let proxies = try fromEnvironment(backend, options) { try ProxySettings.fromEnvironment($0) }
        // Started now, so that the client's requests are spans of the calls.
        try fromEnvironment(backend, options) { try ShimTracing.startIfConfigured(environment: $0, logger: options.logger) }
        return CloudHTTPClient(proxies: proxies, tracer: ShimTracing.tracer, logger: options.logger)
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

    @Option(help: ArgumentHelp("Append a line per start and end of each Instances and NetworkInterfaces call to this file (shared by several shims; for tests).", valueName: "FILE"))
    var callLog: String?

    func validate() throws {
        if epoch != nil, manualClock { throw ValidationError("--epoch and --manual-clock exclude each other") }
    }

    @OptionGroup var shim: ShimOptions

    func run() async throws {
        let clock: any FakeClock = manualClock ? ManualFakeClock() : epoch.map { WallFakeClock(epochSeconds: $0) } ?? WallFakeClock()
        let status = await FakeShim.main(
            command: "provider-shim fake", scenarioPath: scenario, clock: clock, callLog: callLog, options: shim.options("fake"))
        throw ExitCode(status)
    }
}

struct EC2: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ec2",
        abstract: "Amazon EC2 over its Query API (HTTPS, Signature V4).",
        discussion: """
            The cloud spec gives the region and, optionally, the endpoint (plain HTTP only on loopback) and the \
            attributes page-size (5-1000) and sts-endpoint. Credential types (auth_type): access-key (access-key, \
            secret-key, optional session-token), session-token (all three), assume-role (base keys, role-arn, optional \
            external-id, session-name, duration-seconds), instance-role (optional role; keys from the instance metadata \
            service, IMDSv2). Credentials arrive with each call over the socket, never in argv or the environment. \
            The environment may name proxies: HTTPS_PROXY, HTTP_PROXY, NO_PROXY (lower case wins), and the metadata \
            service: AWS_EC2_METADATA_SERVICE_ENDPOINT (default http://169.254.169.254, always reached direct).
            """
    )

    @Option(help: "Seconds a ValidateCredential answer is cached per credential.")
    var credentialTTL: Double = 300

    @Option(help: "Attempts per EC2 call on 5xx and connection errors (jittered backoff, within the call's deadline).")
    var maxAttempts: Int = 3

    @Option(help: ArgumentHelp("Temporary keys (assume-role, instance-role) are obtained anew once fewer than this many seconds, or less than 10 % of their lifetime, are left.", valueName: "SECONDS"))
    var credentialRefreshMargin: Double = 300

    @OptionGroup var shim: ShimOptions

    func validate() throws {
        guard credentialTTL >= 0, credentialTTL.isFinite else { throw ValidationError("--credential-ttl must be ≥ 0 seconds") }
        guard (1...10).contains(maxAttempts) else { throw ValidationError("--max-attempts must be from 1 to 10") }
        guard credentialRefreshMargin >= 0, credentialRefreshMargin <= 43200 else {
            throw ValidationError("--credential-refresh-margin must be from 0 to 43200 seconds")
        }
    }

    func run() async throws {
        MallocTuning.tune(for: .largeFrames)
        let options = shim.options("ec2")
        // The proxies and the metadata endpoint come from the environment
        // the controller passes (the provider's env: list); a bad value
        // stops the shim before its handshake, in one line.
        let metadata = try shim.fromEnvironment("ec2", options) { try InstanceMetadataEndpoint.fromEnvironment($0) }
        let http = try shim.httpClient("ec2", options)
        var settings = EC2Client.Settings()
        settings.maxAttempts = maxAttempts
        let backend = EC2Backend(
            client: EC2Client(http: http, settings: settings, logger: options.logger),
            metadata: metadata,
            credentialTTL: .milliseconds(Int64(credentialTTL * 1000)),
            refresh: KeyRefresh(margin: .milliseconds(Int64(credentialRefreshMargin * 1000))),
            logger: options.logger
        )
        let status = await ShimProcess.run(backend: backend, options: options)
        try? await http.shutdown()
        throw ExitCode(status)
    }
}

struct VSphere: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vsphere",
        abstract: "VMware vSphere (vCenter) over its Web Services API (SOAP over HTTPS).",
        discussion: """
            The cloud spec gives the endpoint (https://vcenter.example.com/sdk, or a bare host; plain HTTP only on \
            loopback) and the attributes datacenter (else the region), folder (a path under the datacenter's VM \
            folder) and page-size (1-10000). Instance ids are VM names, or instance UUIDs. Credentials (auth type \
            userpass): user, password; they arrive with each call over the socket, never in argv or the environment. \
            The environment may name proxies: HTTPS_PROXY, HTTP_PROXY, NO_PROXY (lower case wins).
            """
    )

    @Option(help: "Seconds a ValidateCredential answer is cached per credential.")
    var credentialTTL: Double = 300

    @Option(help: "Attempts per vSphere request on 5xx and connection errors (jittered backoff, within the call's deadline).")
    var maxAttempts: Int = 3

    @Option(help: "Seconds a scope's VM names and UUIDs are kept between calls, so that a batch reads its own VMs only (0: read the scope every call).")
    var inventoryTTL: Double = 60

    @OptionGroup var shim: ShimOptions

    func validate() throws {
        guard credentialTTL >= 0, credentialTTL.isFinite else { throw ValidationError("--credential-ttl must be ≥ 0 seconds") }
        guard (1...10).contains(maxAttempts) else { throw ValidationError("--max-attempts must be from 1 to 10") }
        guard inventoryTTL >= 0, inventoryTTL.isFinite else { throw ValidationError("--inventory-ttl must be ≥ 0 seconds") }
    }

    func run() async throws {
        MallocTuning.tune(for: .largeFrames)
        let options = shim.options("vsphere")
        let http = try shim.httpClient("vsphere", options)
        var settings = VSphereClient.Settings()
        settings.maxAttempts = maxAttempts
        let client = VSphereClient(http: http, settings: settings, logger: options.logger)
        let backend = VSphereBackend(
            client: client, credentialTTL: .milliseconds(Int64(credentialTTL * 1000)), inventoryTTL: .milliseconds(Int64(inventoryTTL * 1000)),
            logger: options.logger
        )
        let status = await ShimProcess.run(backend: backend, options: options)
        // Sessions end now rather than at vCenter's idle timeout.
        await client.logoutAll()
        try? await http.shutdown()
        throw ExitCode(status)
    }
}
