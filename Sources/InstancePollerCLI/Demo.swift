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
        FileManager.default.createFile(atPath: logPath, contents: nil, attributes: [.posixPermissions: 0o600])
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
                until: { try? await Task.sleep(for: .seconds(seconds)) }
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

/// The built-in fleet: scenarios, config, machines.
enum DemoFleet {
    static let east = (name: "east", count: 12, subnet: "10.1.0")
    static let west = (name: "west", count: 8, subnet: "10.2.0")

    static func makeDirectory() throws -> String {
        var template = Array("/tmp/instancepoller-demo-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw CLIError(.failure, "cannot create a temporary directory: \(String(cString: strerror(errno)))")
        }
        return String(cString: made)
    }

    /// This binary, which serves the fake clouds too (`_fake-shim`).
    static func ownExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// A fake cloud's scenario: instances come up one after another.
    static func scenario(_ cloud: (name: String, count: Int, subnet: String), secret: String, publicBase: Int) -> String {
        var text = """
            name: \(cloud.name)
            credentials:
              - name: main
                attributes: {access-key: AKIA\(cloud.name.uppercased()), secret-key: \(secret)}
                reason: "AuthFailure: the secret key does not match"
            instances:

            """
        for index in 1...cloud.count {
            let up = 2 + (index * 7) % 9
            text += """
                  - id: \(cloud.name)-i-\(index)
                    timeline:
                      - {at: 0s, state: allocating, raw_status: pending}
                      - {at: \(max(1, up - 2))s, state: provisioning, raw_status: pending, message: booting}
                      - at: \(up)s
                        state: running
                        raw_status: running
                        message: ""
                        interfaces:
                          - device_index: 0
                            name: eth0
                            mac_address: "02:00:00:\(String(format: "%02x", publicBase)):00:\(String(format: "%02x", index))"
                            primary: true
                            addresses:
                              - {value: \(cloud.subnet).\(index + 10), scope: cloud-local, cidr: \(cloud.subnet).0/24}
                            shadow_addresses:
                              - {value: 203.0.\(publicBase).\(index + 10), scope: public}

                """
        }
        return text
    }

    /// Scenario time 0 for every fake shim of this demo (restarts and swaps continue the timelines).
    static let epoch = Date().timeIntervalSince1970

    /// The fake shim's command line for a scenario.
    static func shimArguments(_ directory: String, _ scenario: String) -> [String] {
        ["_fake-shim", "--scenario", "\(directory)/\(scenario).yaml", "--epoch", "\(epoch)"]
    }

    /// Writes the scenarios and the config; returns the config.
    static func write(into directory: String, shim: String) throws -> ControllerConfig {
        let files: [(String, String)] = [
            ("east.yaml", scenario(east, secret: "east-secret", publicBase: 113)),
            ("west.yaml", scenario(west, secret: "west-secret", publicBase: 114)),
            ("west-v2.yaml", scenario(west, secret: "west-secret", publicBase: 115)),
        ]
        for (name, text) in files {
            try text.write(toFile: "\(directory)/\(name)", atomically: true, encoding: .utf8)
        }
        var config = ControllerConfig(file: "\(directory)/demo.yaml", storePath: "\(directory)/store.db", runtimeDirectory: "\(directory)/run")
        config.poll = PollSettings(shortPoll: .seconds(1), backoffFactor: 2, shortPollCap: .seconds(4), longPoll: .seconds(8), longPollJitter: 0.1, maxIDsPerCall: 200)
        config.callTimeout = .seconds(10)
        config.supervision.healthInterval = .seconds(1)
        config.supervision.drainTimeout = .seconds(2)
        config.supervision.exitGrace = .seconds(1)
        for cloud in [east.name, west.name] {
            config.providers.append(ProviderConfig(
                name: cloud,
                shim: ShimCommand(executable: shim, arguments: shimArguments(directory, cloud)),
                cloud: .with {
                    $0.type = "fake"
                    $0.name = cloud
                }
            ))
            config.credentials.append(CredentialConfig(
                provider: cloud, name: "main", authType: "access-key",
                attributes: ["access-key": "AKIA\(cloud.uppercased())", "secret-key": "\(cloud)-secret"]
            ))
        }
        return config
    }
}

/// The demo's script, and its screen fed from the control API.
struct DemoScript {
    let socket: String
    let directory: String
    let screen: DemoScreen
    let duration: Double

    func run() async {
        let client: RPCClient
        do {
            client = try await RPCClient.connect(unixSocketPath: socket, logger: Logger(label: "demo") { _ in SwiftLogNoOpLogHandler() })
        } catch {
            screen.note("cannot reach the controller: \(error)")
            return
        }
        defer { Task { await client.close() } }
        let start = ContinuousClock.now
        var steps = Self.steps
        // 20 machines: most agentless, a few with an agent still starting,
        // one not provisioned yet, one provisioned by hand.
        for (cloud, count) in [(DemoFleet.east.name, DemoFleet.east.count), (DemoFleet.west.name, DemoFleet.west.count)] {
            for index in 1...count {
                let id = "\(cloud)-\(String(format: "%02d", index))"
                _ = try? await client.call(ControlV1.addMachine, .with {
                    $0.id = id
                    $0.provider = cloud
                    $0.credential = "main"
                    if !(cloud == "east" && index == 12) { $0.instanceID = "\(cloud)-i-\(index)" }
                    $0.manual = cloud == "west" && index == 8
                    $0.agentStatus = index % 4 == 0 ? "pending" : "none"
                })
            }
        }
        screen.label("20 machines added on two clouds: they start pending and back off 1, 2, 4 s while they boot")
        while !Task.isCancelled {
            let elapsed = (ContinuousClock.now - start).seconds
            while let step = steps.first, step.at <= elapsed, step.at < duration - 3 {
                steps.removeFirst()
                await perform(step.action, client)
            }
            if let machines = try? await client.call(ControlV1.listMachines, .init(), timeout: .seconds(5)).machines,
               let providers = try? await client.call(ControlV1.listProviders, .init(), timeout: .seconds(5)).providers
            {
                screen.update(machines: machines, providers: providers)
            }
            try? await Task.sleep(for: .milliseconds(400))
        }
    }

    enum Action {
        case agentsStarted, breakCredential, mendCredential, killShim, swap
    }

    static let steps: [(at: Double, action: Action)] = [
        (12, .agentsStarted), (14, .breakCredential), (19, .mendCredential), (23, .killShim), (28, .swap),
    ]

    private func perform(_ action: Action, _ client: RPCClient) async {
        switch action {
        case .agentsStarted:
            screen.label("the pending agents report started: machines with addresses move to the long poll group")
            for (cloud, count) in [("east", 12), ("west", 8)] {
                for index in stride(from: 4, through: count, by: 4) {
                    _ = try? await client.call(ControlV1.setAgentStatus, .with {
                        $0.id = "\(cloud)-\(String(format: "%02d", index))"
                        $0.agentStatus = "started"
                    })
                }
            }
        case .breakCredential:
            screen.label("credential west/main replaced by one with a wrong secret: the gate finds it invalid and pauses west")
            _ = try? await client.call(ControlV1.setCredential, .with {
                $0.provider = "west"
                $0.name = "main"
                $0.authType = "access-key"
                $0.attributes = ["access-key": "AKIAWEST", "secret-key": "a-wrong-secret"]
            })
            _ = try? await client.call(ControlV1.setAgentStatus, .with { $0.id = "west-04"; $0.agentStatus = "pending" })
        case .mendCredential:
            screen.label("credential west/main restored: validated, and its paused machines are polled at once")
            _ = try? await client.call(ControlV1.setCredential, .with {
                $0.provider = "west"
                $0.name = "main"
                $0.authType = "access-key"
                $0.attributes = ["access-key": "AKIAWEST", "secret-key": "west-secret"]
            })
            _ = try? await client.call(ControlV1.setAgentStatus, .with { $0.id = "west-04"; $0.agentStatus = "started" })
        case .killShim:
            if let east = try? await client.call(ControlV1.listProviders, .init()).providers.first(where: { $0.name == "east" }), east.pid > 0 {
                screen.label("east's shim (pid \(east.pid)) killed with SIGKILL: the supervisor restarts it; no machine is lost")
                kill(east.pid, SIGKILL)
            }
        case .swap:
            screen.label("west swapped live to a new backend (new public addresses): no batch fails, no poll is missed")
            do {
                let answer = try await client.call(ControlV1.swapProvider, .with {
                    $0.provider = "west"
                    $0.command = DemoFleet.ownExecutable()
                    $0.args = DemoFleet.shimArguments(directory, "west-v2")
                })
                screen.label("west now served by pid \(answer.provider.pid); its machines pick up 203.0.115.x as they are polled")
            } catch {
                screen.label("the swap was refused: \(RPCError(from: error).message)")
            }
        }
    }
}

/// What the demo shows: a redrawn table on a terminal, plain lines otherwise.
final class DemoScreen: @unchecked Sendable {
    private let lock = NSLock()
    private let live: Bool
    private let start: ContinuousClock.Instant
    private var events: [String] = []
    private var previous: [String: ControlV1.Machine] = [:]
    private var previousPids: [String: Int32] = [:]
    private var lastFrame: [String] = []

    init(live: Bool, start: ContinuousClock.Instant) {
        self.live = live
        self.start = start
    }

    private var stamp: String { String(format: "%5.1fs", (ContinuousClock.now - start).seconds) }

    /// A step of the script, labelled as it happens.
    func label(_ text: String) { add("▶ \(text)") }

    /// Something the operator should know (not part of the story).
    func note(_ text: String) { add(text) }

    private func add(_ text: String) {
        lock.lock()
        let line = "[\(stamp)] \(text)"
        events.append(line)
        lock.unlock()
        if !live { Output.line(line) } else { redraw() }
    }

    func update(machines: [ControlV1.Machine], providers: [ControlV1.ProviderInfo]) {
        var seen: [String] = []
        lock.lock()
        for machine in machines {
            let before = previous[machine.id]
            let state = Output.state(machine)
            if let before {
                if Output.state(before) != state { seen.append("\(machine.id): \(Output.state(before)) → \(state)") }
                if Output.addresses(before) != Output.addresses(machine), Output.addresses(machine) != "-" {
                    seen.append("\(machine.id): addresses \(Output.addresses(machine))")
                }
                if before.group != machine.group, machine.group == "long" { seen.append("\(machine.id): moved to the long poll group") }
                if before.pollError != machine.pollError, !machine.pollError.isEmpty { seen.append("\(machine.id): \(machine.pollError)") }
                if !before.pollError.isEmpty, machine.pollError.isEmpty { seen.append("\(machine.id): polled again") }
            }
            previous[machine.id] = machine
        }
        for provider in providers {
            if let old = previousPids[provider.name], old != provider.pid {
                switch (old, provider.pid) {
                case (_, 0): seen.append("\(provider.name): shim down, restarting")
                case (0, let new): seen.append("\(provider.name): shim up again as pid \(new)")
                case (let old, let new): seen.append("\(provider.name): now served by pid \(new) (was \(old))")
                }
            }
            if provider.pid != 0 || previousPids[provider.name] != nil { previousPids[provider.name] = provider.pid }
        }
        let stamp = self.stamp
        events += seen.map { "[\(stamp)]   \($0)" }
        lastFrame = Self.table(machines, providers)
        lock.unlock()
        if live {
            redraw()
        } else {
            for line in seen { Output.line("[\(stamp)]   \(line)") }
        }
    }

    static func table(_ machines: [ControlV1.Machine], _ providers: [ControlV1.ProviderInfo]) -> [String] {
        var lines = ["instancepoller demo — Ctrl-C ends it", ""]
        lines += Output.tableLines(
            ["PROVIDER", "SHIM PID", "RESTARTS"],
            providers.map { [$0.name, $0.pid == 0 ? "down" : "\($0.pid)", "\($0.restarts)"] }
        )
        lines.append("")
        lines += Output.tableLines(
            ["MACHINE", "STATE", "AGENT", "GROUP", "ADDRESSES", "NOTE"],
            machines.map {
                [$0.id, Output.state($0), $0.agentStatus,
                 $0.group.isEmpty ? ($0.manual ? "manual" : "-") : "\($0.group) \(Output.duration(nanoseconds: $0.intervalNano))",
                 Output.addresses($0), $0.pollError.isEmpty ? ($0.instanceID.isEmpty ? "not provisioned" : "") : $0.pollError]
            }
        )
        return lines
    }

    private func redraw() {
        lock.lock()
        var frame = lastFrame
        frame.append("")
        frame.append("EVENTS")
        frame += events.suffix(12)
        lock.unlock()
        Output.line("\u{1B}[H\u{1B}[2J" + frame.joined(separator: "\n"))
    }

    func finish() {
        if live { redraw() }
    }
}

extension Duration {
    var seconds: Double {
        let (whole, fraction) = components
        return Double(whole) + Double(fraction) / 1e18
    }
}

/// `instancepoller _fake-shim`: the fake cloud the demo supervises (the
/// same backend as `provider-shim fake`), so the demo needs no other binary.
struct DemoFakeShim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_fake-shim", abstract: "The demo's fake cloud shim.", shouldDisplay: false)

    @Option var scenario: String
    @Option var epoch: Double

    func run() async throws {
        let options = ShimProcess.Options(
            environment: ProcessInfo.processInfo.environment,
            logger: Logger(label: "fake") { LineLogHandler(label: $0, level: .info) }
        )
        throw ExitCode(await FakeShim.main(command: "instancepoller _fake-shim", scenarioPath: scenario, clock: WallFakeClock(epochSeconds: epoch), options: options))
    }
}
