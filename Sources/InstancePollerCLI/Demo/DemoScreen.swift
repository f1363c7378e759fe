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
