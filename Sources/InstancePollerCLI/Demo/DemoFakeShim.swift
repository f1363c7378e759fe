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
