import ArgumentParser
import Controller
import Core
import Foundation
import SwiftProtobuf
import ControlAPI

// MARK: - status

struct Status: ControllerCommand {
    static let configuration = CommandConfiguration(abstract: "Show the controller, its providers' shims and its machines at a glance.")

    @OptionGroup var controller: ControllerOptions

    func execute() async throws {
        let status = try await controller.call(ControlV1.status, .init())
        if controller.format.isStructured { return try Output.json(status, controller.format) }
        Output.line("controller  pid \(status.pid), version \(status.version), up since \(Output.time(status.startedUnixNano))")
        Output.line("store       \(status.storePath) (revision \(status.revision))")
        Output.line("runtime     \(status.runtimeDirectory)")
        let states = status.machinesByState.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        Output.line("machines    \(status.machines) (\(states.isEmpty ? "none" : states)); short group \(status.shortGroup), long group \(status.longGroup)")
        Output.line("polling     \(status.pollErrors) with a poll error, \(status.overdue) overdue, \(status.notFound) not found by their provider")
        Output.line("credentials \(status.credentials) (\(status.invalidCredentials) invalid)")
        // Controllers sharing a PostgreSQL store (docs/DESIGN.md §8); none with SQLite.
        if !status.controllers.isEmpty {
            Output.line("controllers \(status.controllers.count) sharing the store (* answered this call)")
            let rows = ControlService.controllerRows(status, now: SystemPollClock().now)
            let widths = Output.columnWidths(rows[0].map { _ in "" }, rows)
            for row in rows { Output.line("  " + Output.tableLine(row, widths: widths)) }
        }
        Output.line()
        ProvidersList.render(status.providers)
    }
}

// MARK: - machines
