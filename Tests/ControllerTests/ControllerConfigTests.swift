@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Foundation
import Logging
import Testing
import TestSupport

/// The controller's config file: the shipped example, defaults, and errors
/// that name the file, the line and the key.
@Suite("Controller config")
struct ControllerConfigTests {
    static let example = BuiltProducts.repositoryRoot + "/config/example.yaml"

    static func parse(_ text: String, environment: [String: String] = [:]) throws -> ControllerConfig {
        try ControllerConfig.parse(text, file: "/etc/ip/config.yaml", environment: environment)
    }

    /// The one-line error for `text`.
    static func error(_ text: String) -> String {
        do {
            _ = try parse(text)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    static let minimal = """
        providers:
          aws:
            shim: {command: /bin/true}
            cloud: {type: ec2}

        """

    /// What a reload reports as taking effect only at the next restart:
    /// each changed setting by its config name, nothing for an unchanged
    /// config, and nothing for `human` ↔ `logfmt` (the same lines).
    @Test func aReloadNamesTheSettingsThatNeedARestart() throws {
        let before = try Self.parse(Self.minimal + "log: {level: info, format: human}\n")
        #expect(try Self.parse(Self.minimal + "log: {level: info, format: human}\n").settingsNeedingRestart(from: before).isEmpty)
        #expect(try Self.parse(Self.minimal + "log: {level: info, format: logfmt}\n").settingsNeedingRestart(from: before).isEmpty)
        #expect(try Self.parse(Self.minimal + "log: {level: info, format: json}\n").settingsNeedingRestart(from: before) == ["log"])
        #expect(try Self.parse(Self.minimal + "log: {level: debug, format: logfmt}\n").settingsNeedingRestart(from: before) == ["log"])
        let changed = try Self.parse(Self.minimal + """
            log: {level: info, format: human}
            poll: {long_poll: 20m}
            supervision: {max_backoff: 10s}

            """)
        #expect(changed.settingsNeedingRestart(from: before) == ["poll", "supervision"])
    }

    @Test func theShippedExampleIsCompleteAndValid() throws {
        let config = try ControllerConfig.load(path: Self.example, environment: [:])
        let directory = BuiltProducts.repositoryRoot + "/config"
        #expect(config.storePath == directory + "/instancepoller.db")
        #expect(config.runtimeDirectory == directory + "/run")
        #expect(config.logLevel == .info)
        #expect(config.logFormat == .human)
        #expect(config.poll == PollSettings(), "the example shows the defaults")
        #expect(config.supervision == SupervisionSettings())
        #expect(config.callTimeout == .seconds(30))
        #expect(config.limits == LimitSettings(), "the example shows the limits' defaults")
        let demo = try #require(config.provider(named: "demo"))
        #expect(demo.shim.executable.hasSuffix("/provider-shim"))
        #expect(FileManager.default.isExecutableFile(atPath: demo.shim.executable))
        #expect(demo.shim.arguments == ["fake", "--scenario", "scenario.yaml"])
        #expect(demo.shim.workingDirectory == directory, "the shim runs next to the config, where scenario.yaml is")
        #expect(demo.cloud.type == "fake")
        #expect(demo.cloud.name == "demo")
        #expect(config.credentials.map(\.name) == ["main"])
        #expect(config.credentials[0].attributes["access-key"] == "AKIAFAKEEXAMPLE")
    }

    /// `shim.user` and `shim.group` resolve to ids at load time; a name
    /// the system does not know, or a group without a user, is a one-line
    /// error naming the key.
    @Test func shimUserAndGroup() throws {
        func config(_ shim: String) -> String {
            "providers:\n  aws:\n    shim: {command: /bin/true, \(shim)}\n    cloud: {type: ec2}\n"
        }
        #expect(try Self.parse(Self.minimal).providers[0].shim.user == nil)
        if getuid() == 0 {
            let nobody = try #require(try Self.parse(config("user: nobody")).providers[0].shim.user)
            #expect(nobody == ShimUser(uid: 65534, gid: 65534, name: "nobody"))
            let numeric = try #require(try Self.parse(config("user: 65534, group: 0")).providers[0].shim.user)
            #expect(numeric == ShimUser(uid: 65534, gid: 0, name: "65534"))
            #expect(Self.error(config("user: 4000123")) == "/etc/ip/config.yaml:3:38: providers.aws.shim.user: uid 4000123 has no entry in the user database; give shim.group too")
        }
        #expect(Self.error(config("user: no-such-user-x1")) == "/etc/ip/config.yaml:3:38: providers.aws.shim.user: no user \"no-such-user-x1\" on this system")
        #expect(Self.error(config("user: root, group: no-such-group-x1")).hasSuffix("providers.aws.shim.group: no group \"no-such-group-x1\" on this system"))
        #expect(Self.error(config("group: root")).hasSuffix("providers.aws.shim.group: give shim.user with shim.group"))
    }

    @Test func defaultsAndRelativePaths() throws {
        let environment = ["XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/op"]
        let config = try Self.parse(Self.minimal, environment: environment)
        #expect(config.storePath == ControllerConfig.defaultStateDirectory(environment: environment)! + "/instancepoller.db")
        #expect(config.storeDirectoryIsDefault)
        #expect(config.runtimeDirectory == ControllerConfig.defaultRuntimeDirectory(environment: environment))
        let relative = try Self.parse("store: ../data/m.db\nruntime_directory: /run/ip\n" + Self.minimal)
        #expect(relative.storePath == "/etc/data/m.db")
        #expect(!relative.storeDirectoryIsDefault)
        #expect(relative.runtimeDirectory == "/run/ip")
    }

    /// Root never gets a guessable path in /tmp; the store's default is a
    /// private state directory, never the config's directory.
    @Test func defaultDirectoriesByUser() {
        let user: [String: String] = ["XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/op"]
        #expect(ControllerConfig.defaultRuntimeDirectory(environment: user, uid: 0) == "/run/instancepoller")
        #expect(ControllerConfig.defaultRuntimeDirectory(environment: user, uid: 1000) == "/run/user/1000/instancepoller")
        #expect(ControllerConfig.defaultRuntimeDirectory(environment: [:], uid: 1000) == "/tmp/instancepoller-1000")
        #expect(ControllerConfig.defaultStateDirectory(environment: user, uid: 0) == "/var/lib/instancepoller")
        #expect(ControllerConfig.defaultStateDirectory(environment: user, uid: 1000) == "/home/op/.local/state/instancepoller")
        #expect(ControllerConfig.defaultStateDirectory(environment: ["XDG_STATE_HOME": "/srv/state", "HOME": "/home/op"], uid: 1000) == "/srv/state/instancepoller")
        #expect(ControllerConfig.defaultStateDirectory(environment: [:], uid: 1000) == nil)
    }

    /// StrictModes: group- or world-writable configs are refused; inline
    /// secrets others can read are a warning (a credential file is not).
    @Test func theConfigFileIsTrustedByModeAndOwner() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("config.yaml")
        let inline = Self.minimal + "credentials:\n  - {provider: aws, name: main, auth_type: token, attributes: {token: t0ken-secret}}\n"
        try inline.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        let readable = try ControllerConfig.load(path: path, environment: [:])
        #expect(readable.warnings == ["\(path) holds credential attributes and has mode 0644, so other users can read them; chmod 600 it, or move them to a credential file"])
        chmod(path, 0o600)
        #expect(try ControllerConfig.load(path: path, environment: [:]).warnings.isEmpty)
        try Self.minimal.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        #expect(try ControllerConfig.load(path: path, environment: [:]).warnings.isEmpty, "no secrets in it")

        chmod(path, 0o620)
        #expect { try ControllerConfig.load(path: path, environment: [:]) } throws: {
            "\($0)" == "\(path): the file has mode 0620: others can change the commands this controller runs; chmod go-w \(path)"
        }
        chmod(path, 0o644)
        chmod(directory.path, 0o777)
        #expect { try ControllerConfig.load(path: path, environment: [:]) } throws: {
            "\($0)".hasPrefix("\(path): its \(directory.path): directory has mode 0777: others can rename what it holds")
        }
        chmod(directory.path, 0o700)
    }

    @Test func theShimGetsOnlyTheAllowlistedEnvironment() throws {
        let config = try Self.parse("""
            providers:
              aws:
                shim: {command: /bin/true, args: [ec2, -v], env: [HTTPS_PROXY, NOT_SET]}
                cloud: {type: ec2, region: eu-west-1, endpoint: "http://127.0.0.1:5000", attributes: {vpc: v-1}}
            """, environment: ["HTTPS_PROXY": "http://proxy:3128", "AWS_SECRET_ACCESS_KEY": "nope", "PATH": "/bin"])
        let aws = try #require(config.provider(named: "aws"))
        #expect(aws.shim == ShimCommand(
            executable: "/bin/true", arguments: ["ec2", "-v"], environment: ["HTTPS_PROXY": "http://proxy:3128"], workingDirectory: "/etc/ip"
        ))
        #expect(aws.environmentAllowlist == ["HTTPS_PROXY", "NOT_SET"])
        #expect(aws.cloud.region == "eu-west-1")
        #expect(aws.cloud.endpoint == "http://127.0.0.1:5000")
        #expect(aws.cloud.attributes == ["vpc": "v-1"])
    }

    /// What a cloud backend reads from its environment (docs/DESIGN.md
    /// §7.2) can be passed on, in either case.
    @Test func theProxyAndMetadataVariablesCanBePassedToAShim() throws {
        let names = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "AWS_EC2_METADATA_SERVICE_ENDPOINT"]
        #expect(names.allSatisfy(ShimCommand.isPassable))
        let config = try Self.parse("""
            providers:
              aws:
                shim: {command: /bin/true, args: [ec2], env: [\(names.joined(separator: ", "))]}
                cloud: {type: ec2, region: eu-west-1}
            """, environment: [
                "https_proxy": "http://proxy:3128", "NO_PROXY": ".internal", "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9",
                "ALL_PROXY": "http://not-listed:1",
            ])
        let aws = try #require(config.provider(named: "aws"))
        #expect(aws.environmentAllowlist == names)
        #expect(aws.shim.environment == [
            "https_proxy": "http://proxy:3128", "NO_PROXY": ".internal", "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9",
        ])
    }

    @Test func pollAndSupervisionSettings() throws {
        let config = try Self.parse("""
            poll: {short_poll: 1s, backoff_factor: 1.5, short_poll_cap: 20s, long_poll: 5m, long_poll_jitter: 0, max_ids_per_call: 50, call_timeout: 4s}
            supervision: {health_interval: 2s, failed_checks: 5, initial_backoff: 500ms, max_backoff: 10s, drain_timeout: 1s}
            log: {level: debug, format: json}
            """ + "\n" + Self.minimal)
        #expect(config.poll == PollSettings(shortPoll: .seconds(1), backoffFactor: 1.5, shortPollCap: .seconds(20), longPoll: .seconds(300), longPollJitter: 0, maxIDsPerCall: 50))
        #expect(config.callTimeout == .seconds(4))
        #expect(config.supervision.healthInterval == .seconds(2))
        #expect(config.supervision.failedChecksBeforeRestart == 5)
        #expect(config.supervision.initialBackoff == .milliseconds(500))
        #expect(config.supervision.maximumBackoff == .seconds(10))
        #expect(config.supervision.drainTimeout == .seconds(1))
        #expect(config.logLevel == .debug)
        #expect(config.logFormat == .json)
    }

    /// A provider's own `poll:` block overrides the config's key by key; the
    /// other providers keep the config's.
    @Test func aProviderOverridesPollSettings() throws {
        let config = try Self.parse("""
            poll: {short_poll: 2s, long_poll: 10m, call_timeout: 20s}
            providers:
              aws-slow:
                shim: {command: /bin/true}
                cloud: {type: ec2}
                poll: {long_poll: 1h, max_ids_per_call: 50, call_timeout: 45s}
              aws-fast:
                shim: {command: /bin/true}
                cloud: {type: ec2}
            """)
        let slow = try #require(config.provider(named: "aws-slow"))
        #expect(slow.poll == PollSettings(shortPoll: .seconds(2), longPoll: .seconds(3600), maxIDsPerCall: 50))
        #expect(slow.callTimeout == .seconds(45))
        #expect(config.provider(named: "aws-fast")?.poll == nil)
        #expect(config.providerPollSettings == ["aws-slow": PollSettings(shortPoll: .seconds(2), longPoll: .seconds(3600), maxIDsPerCall: 50)])
        #expect(config.providerCallTimeouts == ["aws-slow": .seconds(45)])
        #expect(config.poll == PollSettings(shortPoll: .seconds(2), longPoll: .seconds(600)))
    }

    @Test(arguments: [
        ("poll: {long_poll: slow}", "5:23: providers.aws.poll.long_poll: expected a duration such as 90s, 250ms or 2m, not \"slow\""),
        ("poll: {short_poll: 2m}", "5:11: providers.aws.poll: short poll cap must not be below the short poll interval"),
        ("poll: {health_interval: 2s}", "5:12: providers.aws.poll: unknown key \"health_interval\" (expected one of: short_poll, backoff_factor, short_poll_cap, long_poll, long_poll_jitter, max_ids_per_call, call_timeout)"),
        ("pol: {}", "5:5: providers.aws: unknown key \"pol\" (expected one of: shim, cloud, poll)"),
    ])
    func aProvidersPollErrorsNameItsKey(block: String, expected: String) {
        let text = "providers:\n  aws:\n    shim: {command: /bin/true}\n    cloud: {type: ec2}\n    \(block)\n"
        #expect(Self.error(text) == "/etc/ip/config.yaml:\(expected)")
    }

    @Test(arguments: [
        (
            "stor: x.db\n",
            "/etc/ip/config.yaml:1:1: unknown key \"stor\" (expected one of: store, store_password_file, credential_key_file, events, cluster, runtime_directory, log, metrics, poll, supervision, providers, credentials, limits, tracing)"
        ),
        ("store: x.db\n", "/etc/ip/config.yaml:1:1: no providers: the config needs at least one under providers"),
        ("poll: {short_poll: soon}\n", "/etc/ip/config.yaml:1:20: poll.short_poll: expected a duration such as 90s, 250ms or 2m, not \"soon\""),
        ("poll: {short_poll: 10s, short_poll_cap: 5s}\n", "/etc/ip/config.yaml:1:7: poll: short poll cap must not be below the short poll interval"),
        ("log: {level: loud}\n", "/etc/ip/config.yaml:1:14: log.level: unknown value \"loud\" (expected one of: trace, debug, info, notice, warning, error, critical)"),
        ("supervision: {initial_backoff: 5s, max_backoff: 1s}\n", "/etc/ip/config.yaml:1:49: supervision.max_backoff: must not be below initial_backoff"),
        ("providers: {}\n", "/etc/ip/config.yaml:1:12: providers: at least one provider is needed"),
        ("providers:\n  a b:\n    shim: {command: /bin/true}\n", "/etc/ip/config.yaml:2:3: providers.a b: provider names use letters, digits, '-', '_' and '.' (at most 64)"),
        ("providers:\n  aws:\n    cloud: {type: ec2}\n", "/etc/ip/config.yaml:3:5: providers.aws: a provider needs a shim (command, args, env)"),
        ("providers:\n  aws:\n    shim: {command: /bin/true}\n", "/etc/ip/config.yaml:3:5: providers.aws.cloud.type: the cloud needs a type, e.g. ec2 or fake"),
        ("providers:\n  aws:\n    shim: {command: no-such-shim-here}\n    cloud: {type: ec2}\n", "/etc/ip/config.yaml:3:21: providers.aws.shim.command: no executable \"no-such-shim-here\" (looked next to instancepoller and on PATH)"),
        ("providers:\n  aws:\n    shim: {command: /bin/true, env: [INSTANCEPOLLER_SOCKET]}\n    cloud: {type: ec2}\n", "/etc/ip/config.yaml:3:38: providers.aws.shim.env[0]: \"INSTANCEPOLLER_SOCKET\" cannot be passed on"),
        ("providers:\n  aws:\n    shim: [x]\n", "/etc/ip/config.yaml:3:11: providers.aws.shim: expected a mapping with keys command, args, env, user, group"),
        ("metrics: {address: 0.0.0.0:9464}\n", "/etc/ip/config.yaml:1:20: metrics.address: 0.0.0.0 is not a loopback address; metrics are served on 127.0.0.1, ::1 or localhost only"),
        ("metrics: {address: 9464}\n", "/etc/ip/config.yaml:1:20: metrics.address: expected host:port, e.g. 127.0.0.1:9464, not \"9464\""),
        ("providers: [\n", "/etc/ip/config.yaml:2:1: not valid YAML: did not find expected node content"),
    ])
    func errorsNameTheFileLineAndKey(text: String, expected: String) {
        #expect(Self.error(text) == expected)
    }

    @Test(arguments: [
        ("- {provider: gcp, name: main, auth_type: key, attributes: {k: v}}", "6:14: credentials[0].provider: no provider \"gcp\" under providers"),
        ("- {provider: aws, auth_type: key, attributes: {k: v}}", "6:3: credentials[0]: a credential needs a name"),
        ("- {provider: aws, name: main, attributes: {k: v}}", "6:3: credentials[0]: a credential needs an auth_type, e.g. access-key"),
        ("- {provider: aws, name: main, auth_type: key}", "6:3: credentials[0]: a credential needs attributes or a file holding them"),
        ("- {provider: aws, name: main, auth_type: key, attributes: {k: v}, file: x.yaml}", "6:3: credentials[0]: give either attributes or file, not both"),
        ("- {provider: aws, name: main, auth_type: key, attributes: {k: v}, expires: tomorrow}", "6:76: credentials[0].expires: expected a time such as 2027-01-31T00:00:00Z, not \"tomorrow\""),
        ("- {provider: aws, name: main, auth_type: key, attributes: {k: v}}\n- {provider: aws, name: main, auth_type: key, attributes: {k: v}}", "7:3: credentials[1]: credential aws/main appears twice"),
    ])
    func credentialErrors(entry: String, expected: String) {
        #expect(Self.error(Self.minimal + "credentials:\n" + entry + "\n") == "/etc/ip/config.yaml:" + expected)
    }

    @Test func credentialsFromTheirOwnPrivateFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let secrets = directory.file("aws.yaml")
        #expect(FileManager.default.createFile(atPath: secrets, contents: Data("access-key: AKIA1\nsecret-key: hunter2-secret\n".utf8), attributes: [.posixPermissions: 0o600]))
        let configPath = directory.file("config.yaml")
        try (Self.minimal + "credentials:\n  - {provider: aws, name: main, auth_type: access-key, file: aws.yaml, expires: 2027-01-31T00:00:00Z}\n")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        let config = try ControllerConfig.load(path: configPath, environment: [:])
        #expect(config.credentials[0].attributes == ["access-key": "AKIA1", "secret-key": "hunter2-secret"])
        #expect(config.credentials[0].expiresAt == Timestamp(nanosecondsSinceEpoch: 1_801_353_600_000_000_000))
        #expect(!"\(config.credentials[0])".contains("hunter2"), "the description names attributes, never values")

        // Readable by others: refused, without quoting it.
        chmod(secrets, 0o644)
        do {
            _ = try ControllerConfig.load(path: configPath, environment: [:])
            Issue.record("a world-readable secrets file was accepted")
        } catch {
            #expect(error.description == "\(configPath):6:62: credentials[0].file: \(secrets) is readable by others (mode 644); chmod 600 it")
        }
        // Broken YAML inside: the error points at it and never quotes it.
        chmod(secrets, 0o600)
        try "secret-key: [hunter2-secret\n".write(toFile: secrets, atomically: false, encoding: .utf8)
        do {
            _ = try ControllerConfig.load(path: configPath, environment: [:])
            Issue.record("broken secrets file accepted")
        } catch {
            #expect(error.description.hasPrefix("\(configPath):6:62: credentials[0].file: \(secrets):"))
            #expect(!error.description.contains("hunter2"))
        }

        // A FIFO (or /dev/stdin) named as the file: refused at once instead
        // of blocking the controller's start on a read that never ends.
        try FileManager.default.removeItem(atPath: secrets)
        #expect(mkfifo(secrets, 0o600) == 0)
        do {
            _ = try ControllerConfig.load(path: configPath, environment: [:])
            Issue.record("a FIFO was read as a secrets file")
        } catch {
            #expect(error.description == "\(configPath):6:62: credentials[0].file: \(secrets): not a regular file")
        }
    }

    @Test func anErrorIsOneLineWhateverTheValueHolds() throws {
        // A quoted value with a newline, and a control character the YAML
        // reader rejects (what fuzzing found): both errors stay on one line.
        for text in [
            "metrics:\n  address: \"a\\nb\"\n",
            "providers:\n  x:\n    shim: {command: a\u{01}}\n",
        ] {
            do {
                _ = try ControllerConfig.parse(text, file: "/etc/ip.yaml", environment: [:])
                Issue.record("accepted \(text.debugDescription)")
            } catch {
                #expect(!error.description.contains("\n"), "\(error.description.debugDescription)")
                #expect(error.description.hasPrefix("/etc/ip.yaml:"))
            }
        }
    }

    // MARK: Limits

    @Test func limitsAndTheirDefaults() throws {
        let defaults = try Self.parse(Self.minimal).limits
        #expect(defaults.control == ServerLimits(), "the control socket gets the servers' defaults")
        #expect(defaults.metrics == MetricsServer.Limits())
        let config = try Self.parse(Self.minimal + """
            limits:
              control_connections: 10
              metrics_connections: 3
              idle_timeout: 2s
              frame_timeout: 500ms
              header_timeout: 1s
              header_size: 1KiB
              requests_per_connection: 4
              request_memory: 16MiB

            """)
        let control = config.limits.control
        #expect(control.maxConnections == 10)
        #expect(control.idleTimeout == .seconds(2))
        #expect(control.frameTimeout == .milliseconds(500))
        #expect(control.requestsPerConnection == 4)
        #expect(control.bufferedRequestMemory == 16 << 20)
        #expect(config.limits.metrics == MetricsServer.Limits(
            maxConnections: 3, idleTimeout: .seconds(2), headerTimeout: .seconds(1), maxHeaderBytes: 1024
        ))
        #expect(try Self.parse(Self.minimal + "limits: {request_memory: 8388608, header_size: 512B}\n").limits.requestMemory == 8 << 20)
    }

    @Test(arguments: [
        ("limits: {control_connections: 0}", "5:31: limits.control_connections: must be from 1 to 1000000"),
        ("limits: {metrics_connections: -1}", "5:31: limits.metrics_connections: expected a whole number ≥ 0"),
        ("limits: {idle_timeout: 0s}", "5:24: limits.idle_timeout: must be more than zero"),
        ("limits: {frame_timeout: later}", "5:25: limits.frame_timeout: expected a duration such as 90s, 250ms or 2m, not \"later\""),
        ("limits: {header_size: 10}", "5:23: limits.header_size: must be from 256 to 1048576 bytes"),
        ("limits: {request_memory: 1MiB}", "5:26: limits.request_memory: must be from 4194314 to 1099511627776 bytes"),
        ("limits: {request_memory: lots}", "5:26: limits.request_memory: expected a size such as 8192, 64KiB or 64MiB, not \"lots\""),
        ("limits: {requests_per_connection: 0}", "5:35: limits.requests_per_connection: must be from 1 to 100000"),
        ("limits: {connections: 5}", "5:10: limits: unknown key \"connections\" (expected one of: control_connections, metrics_connections, idle_timeout, frame_timeout, header_timeout, header_size, requests_per_connection, request_memory)"),
    ])
    func limitErrors(entry: String, expected: String) {
        #expect(Self.error(Self.minimal + entry + "\n") == "/etc/ip/config.yaml:" + expected)
    }

    @Test func theMetricsBearerTokenComesFromAPrivateFileAndIsNeverPrinted() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let tokenFile = directory.file("metrics-token")
        #expect(FileManager.default.createFile(atPath: tokenFile, contents: Data("s3cret-token-value\n".utf8), attributes: [.posixPermissions: 0o600]))
        let configPath = directory.file("config.yaml")
        try ("metrics:\n  address: 127.0.0.1:0\n  bearer_token_file: metrics-token\n" + Self.minimal)
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        let config = try ControllerConfig.load(path: configPath, environment: [:])
        #expect(config.metricsBearerTokenFile == tokenFile)
        #expect(config.metricsBearerToken == MetricsBearerToken("s3cret-token-value"))
        #expect(!"\(config)".contains("s3cret"), "the config's description redacts the token")
        #expect(!String(reflecting: config).contains("s3cret"))

        chmod(tokenFile, 0o640)
        do {
            _ = try ControllerConfig.load(path: configPath, environment: [:])
            Issue.record("a group-readable token file was accepted")
        } catch {
            #expect(error.description == "\(configPath):3:22: metrics.bearer_token_file: \(tokenFile) is readable by others (mode 640); chmod 600 it")
        }
        chmod(tokenFile, 0o600)
        try "two words\n".write(toFile: tokenFile, atomically: false, encoding: .utf8)
        do {
            _ = try ControllerConfig.load(path: configPath, environment: [:])
            Issue.record("a token with a space was accepted")
        } catch {
            #expect(error.description == "\(configPath):3:22: metrics.bearer_token_file: \(tokenFile) must hold one token: a single line without spaces")
            #expect(!error.description.contains("words"))
        }
        try FileManager.default.removeItem(atPath: tokenFile)
        do {
            _ = try ControllerConfig.load(path: configPath, environment: [:])
            Issue.record("a missing token file was accepted")
        } catch {
            #expect(error.description == "\(configPath):3:22: metrics.bearer_token_file: cannot read \(tokenFile): No such file or directory")
        }
    }

    // MARK: - A shared PostgreSQL store, sealed credentials, events retention, cluster

    /// The head of a config on a PostgreSQL store (with the key file it needs).
    static func postgres(_ url: String = "postgres://ip@db.example:5433/fleet?sslmode=require", more: String = "") -> String {
        "store: \(url)\ncredential_key_file: keys/credential.keys\n\(more)" + minimal
    }

    @Test func aPostgresStoreURL() throws {
        let config = try Self.parse(Self.postgres())
        #expect(config.postgres == PostgresLocation(host: "db.example", port: 5433, user: "ip", database: "fleet", tls: .require))
        #expect(config.storePath == "postgres://ip@db.example:5433/fleet?sslmode=require", "what logs and status show")
        #expect(config.credentialKeyFile == "/etc/ip/keys/credential.keys", "relative to the config's directory")
        #expect(config.storePasswordFile == nil)
        #expect(!config.storeDirectoryIsDefault)

        let socket = try #require(try Self.parse(Self.postgres("postgresql://ip@/fleet?host=/run/postgresql")).postgres)
        #expect(socket == PostgresLocation(host: "localhost", user: "ip", database: "fleet", tls: .prefer, socketDirectory: "/run/postgresql"))
        #expect(socket.description == "postgres://ip@localhost:5432/fleet?sslmode=prefer&host=/run/postgresql")

        let withFile = try Self.parse(Self.postgres("postgres://ip@db/fleet", more: "store_password_file: /etc/ip/pg.password\n"))
        #expect(withFile.storePasswordFile == "/etc/ip/pg.password")
        #expect(withFile.postgres?.port == 5432)
        #expect(withFile.postgres?.tls == .prefer)
        // Without postgres, a key file seals the SQLite store's credentials.
        #expect(try Self.parse("credential_key_file: /etc/ip/keys\n" + Self.minimal).credentialKeyFile == "/etc/ip/keys")
        #expect(try Self.parse(Self.minimal).credentialKeyFile == nil)
    }

    @Test(arguments: [
        ("postgres://ip:hunter2@db/fleet", "the store URL holds a password; put it in store_password_file (mode 0600) or PGPASSWORD instead"),
        ("postgres://db.example/fleet", "the store URL names no user (postgres://USER@host/database)"),
        ("postgres://ip@db.example", "the store URL names no database (postgres://user@host/DATABASE)"),
        ("postgres://ip@db.example/", "the store URL names no database (postgres://user@host/DATABASE)"),
        ("postgres://ip@db.example/fleet?sslmode=verify-full", "sslmode \"verify-full\" is not one of disable, prefer, require"),
        ("postgres://ip@db.example/fleet?connect_timeout=5", "unknown store URL parameter \"connect_timeout\" (known: sslmode, host)"),
        ("postgres://ip@db.example/fleet?host=run/pg", "host= in the query must be an absolute socket directory"),
        ("postgres://ip@/fleet", "the store URL names no host (postgres://user@HOST:port/database)"),
    ])
    func postgresStoreURLErrors(url: String, problem: String) {
        let error = Self.error(Self.postgres(url))
        #expect(error == "/etc/ip/config.yaml:1:8: store: \(problem)")
        #expect(!error.contains("hunter2"), "a password written in the URL is never repeated")
    }

    @Test(arguments: [
        (
            "store: x.db\nstore_password_file: pg.password\n",
            "2:22: store_password_file: only a postgres:// store takes a password"
        ),
        (
            "store: postgres://ip@db/fleet\n",
            "1:1: credential_key_file: a shared postgres:// store needs credential_key_file: credentials are sealed at rest (instancepoller credentials new-key makes one)"
        ),
        ("cluster: {lease_ttl: 10s}\n", "1:10: cluster: leases need a shared postgres:// store; a SQLite store has one controller"),
        ("events: {keep_days: 0}\n", "1:21: events.keep_days: must be from 1 to 36500"),
        ("events: {keep_revisions: -5}\n", "1:26: events.keep_revisions: expected a whole number ≥ 0"),
        ("events: {prune_interval: 0s}\n", "1:26: events.prune_interval: must be more than zero"),
        ("events: {keep: 3}\n", "1:10: events: unknown key \"keep\" (expected one of: keep_days, keep_revisions, prune_interval)"),
    ])
    func storeSettingErrors(head: String, expected: String) {
        #expect(Self.error(head + Self.minimal) == "/etc/ip/config.yaml:" + expected)
    }

    @Test func eventsRetention() throws {
        let defaults = try Self.parse(Self.minimal).eventRetention
        #expect(defaults == EventRetention())
        #expect(!defaults.isEnabled, "kept forever unless a bound is set")
        #expect(defaults.pruneInterval == .seconds(600))
        let config = try Self.parse("events:\n  keep_days: 30\n  keep_revisions: 100000\n  prune_interval: 5m\n" + Self.minimal)
        #expect(config.eventRetention.keepFor == .seconds(30 * 86_400))
        #expect(config.eventRetention.keepRevisions == 100_000)
        #expect(config.eventRetention.pruneInterval == .seconds(300))
        #expect(config.eventRetention.isEnabled)
        let byCount = try Self.parse("events: {keep_revisions: 1}\n" + Self.minimal).eventRetention
        #expect(byCount.keepFor == nil && byCount.keepRevisions == 1 && byCount.isEnabled)
    }

    @Test func clusterSettingsOnlyWithPostgres() throws {
        #expect(try Self.parse(Self.postgres()).cluster == ClusterSettings(), "defaults: a 10 s lease, host:pid:random")
        let cluster = try Self.parse(Self.postgres(more: "cluster:\n  lease_ttl: 15s\n  name: ctl-a.eu-west\n")).cluster
        #expect(cluster == ClusterSettings(leaseTTL: .seconds(15), name: "ctl-a.eu-west"))
        #expect(try Self.parse(Self.postgres(more: "cluster: {lease_ttl: 1s}\n")).cluster.leaseTTL == .seconds(1))
        // The errors name the line of the key: the URL and key file take lines 1 and 2.
        #expect(Self.error(Self.postgres(more: "cluster: {lease_ttl: 500ms}\n")) == "/etc/ip/config.yaml:3:22: cluster.lease_ttl: must be at least 1s")
        #expect(Self.error(Self.postgres(more: "cluster: {lease_ttl: 0s}\n")) == "/etc/ip/config.yaml:3:22: cluster.lease_ttl: must be more than zero")
        for name in ["\"ctl a\"", "\"\"", "\"ctl-\u{e9}\"", String(repeating: "x", count: 129)] {
            #expect(
                Self.error(Self.postgres(more: "cluster: {name: \(name)}\n"))
                    == "/etc/ip/config.yaml:3:17: cluster.name: must be 1 to 128 printable ASCII characters without spaces", "\(name)")
        }
        #expect(Self.error(Self.postgres(more: "cluster: {ttl: 5s}\n")) == "/etc/ip/config.yaml:3:11: cluster: unknown key \"ttl\" (expected one of: lease_ttl, name)")
    }

    /// The PostgreSQL password: store_password_file (0600, its first line),
    /// else PGPASSWORD, else the first matching line of PGPASSFILE or
    /// ~/.pgpass (`*` matching anything, `\` escaping); never in an error.
    @Test func thePostgresPasswordAndWhereItComesFrom() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let location = PostgresLocation(host: "db.example", port: 5433, user: "ip", database: "fleet")
        func problem(_ body: () throws -> String?) -> String {
            do {
                return "no error: \(try body() == nil ? "nil" : "a password")"
            } catch {
                return "\(error)"
            }
        }

        let file = directory.file("pg.password")
        #expect(FileManager.default.createFile(atPath: file, contents: Data("pw-from-file\nsecond line\n".utf8), attributes: [.posixPermissions: 0o600]))
        #expect(try location.password(passwordFile: file, environment: ["PGPASSWORD": "pw-from-env"]) == "pw-from-file", "the file comes first")
        chmod(file, 0o644)
        let refused = problem { try location.password(passwordFile: file, environment: [:]) }
        #expect(refused == "store_password_file: \(file) is readable by others (mode 644); chmod 600 it")
        #expect(!refused.contains("pw-from-file"))
        chmod(file, 0o600)
        try "\n".write(toFile: file, atomically: false, encoding: .utf8)
        #expect(problem { try location.password(passwordFile: file, environment: [:]) } == "store_password_file \(file) is empty")

        #expect(try location.password(passwordFile: nil, environment: ["PGPASSWORD": "pw-from-env", "HOME": directory.path]) == "pw-from-env")
        #expect(try location.password(passwordFile: nil, environment: ["HOME": directory.path]) == nil, "no .pgpass: trust or peer authentication")

        // ~/.pgpass: the first line whose fields all match or are "*".
        let pgpass = directory.file(".pgpass")
        #expect(FileManager.default.createFile(atPath: pgpass, contents: Data("""
            # host:port:database:user:password
            db.example:5433:fleet:someone-else:wrong-user
            db.example:5432:fleet:ip:wrong-port
            *:5433:fleet:ip:pa\\:ss\\\\word
            *:*:*:*:too-late

            """.utf8), attributes: [.posixPermissions: 0o600]))
        #expect(try location.password(passwordFile: nil, environment: ["HOME": directory.path]) == "pa:ss\\word")
        var socket = location
        socket.socketDirectory = "/run/postgresql"
        socket.port = 5432
        #expect(try socket.password(passwordFile: nil, environment: ["PGPASSFILE": pgpass]) == "too-late", "over a socket the host is localhost")
        chmod(pgpass, 0o644)
        let loose = problem { try location.password(passwordFile: nil, environment: ["PGPASSFILE": pgpass]) }
        #expect(loose == "password file: \(pgpass) is readable by others (mode 644); chmod 600 it")
        #expect(!loose.contains("pa:ss"))
    }
}
