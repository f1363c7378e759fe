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
            config.credentials.append(StoredCredential(
                provider: cloud, name: "main", authType: "access-key",
                attributes: ["access-key": "AKIA\(cloud.uppercased())", "secret-key": "\(cloud)-secret"]
            ))
        }
        return config
    }
}
