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
