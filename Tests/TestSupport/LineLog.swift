import NIOConcurrencyHelpers

/// The lines a child wrote, kept in order, with waits for a line that
/// matches: tests wait on what a process logs instead of sleeping.
public final class LineLog: Sendable {
    private struct Waiter {
        var from: Int
        var matches: @Sendable (String) -> Bool
        var continuation: CheckedContinuation<Int?, Never>
    }

    private struct State {
        var lines: [String] = []
        var pending: [UInt8] = []
        var ended = false
        var waiters: [Int: Waiter] = [:]
        var nextWaiter = 0
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Every complete line so far.
    public var lines: [String] { state.withLockedValue { $0.lines } }

    /// Adds output; complete lines wake the waiters they match.
    func append(_ bytes: [UInt8]) {
        let woken = state.withLockedValue { state -> [(CheckedContinuation<Int?, Never>, Int)] in
            state.pending += bytes
            while let newline = state.pending.firstIndex(of: UInt8(ascii: "\n")) {
                state.lines.append(String(decoding: state.pending[..<newline], as: UTF8.self))
                state.pending.removeSubrange(...newline)
            }
            return Self.matched(&state)
        }
        for (continuation, index) in woken { continuation.resume(returning: index) }
    }

    /// No more lines will come: waiters still waiting get nil.
    func end() {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Int?, Never>] in
            if !state.pending.isEmpty { state.lines.append(String(decoding: state.pending, as: UTF8.self)); state.pending = [] }
            var woken = Self.matched(&state).map(\.0)
            state.ended = true
            woken += state.waiters.values.map(\.continuation)
            state.waiters = [:]
            return woken
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }

    private static func matched(_ state: inout State) -> [(CheckedContinuation<Int?, Never>, Int)] {
        var woken: [(CheckedContinuation<Int?, Never>, Int)] = []
        for (id, waiter) in state.waiters {
            if let index = state.lines.indices.dropFirst(waiter.from).first(where: { waiter.matches(state.lines[$0]) }) {
                woken.append((waiter.continuation, index))
                state.waiters.removeValue(forKey: id)
            }
        }
        return woken
    }

    /// The first line at index `from` or later that matches, with its index.
    /// Throws ``TimedOut`` after `limit`, or if the output ends first.
    @discardableResult
    public func waitForLine(
        from: Int = 0,
        _ what: String,
        _ limit: Duration = LineLog.defaultWait,
        where matches: @escaping @Sendable (String) -> Bool
    ) async throws -> (index: Int, line: String) {
        let index: Int
        do {
            index = try await waitForIndex(from: from, what, limit, where: matches)
        } catch let timedOut as TimedOut {
            throw UnseenLine(timedOut: timedOut, lastLines: Array(lines.suffix(Self.linesShownOnTimeout)))
        }
        return (index, lines[index])
    }

    /// How long a wait gives a line by default. Waits end on the line, so
    /// the bound costs nothing when the test passes; it is generous because
    /// CI runs the whole suite in parallel on two cores, where one test's
    /// first half has taken 17 s.
    public static let defaultWait: Duration = .seconds(60)

    /// How many of the last lines a timed-out wait shows.
    static let linesShownOnTimeout = 25

    private func waitForIndex(
        from: Int,
        _ what: String,
        _ limit: Duration,
        where matches: @escaping @Sendable (String) -> Bool
    ) async throws -> Int {
        try await withTimeout(limit, what) { () async throws -> Int in
            let id = self.state.withLockedValue { state in
                defer { state.nextWaiter += 1 }
                return state.nextWaiter
            }
            let found: Int? = await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Int?, Never>) in
                    let immediate: Int?? = self.state.withLockedValue { state in
                        if let index = state.lines.indices.dropFirst(from).first(where: { matches(state.lines[$0]) }) { return .some(index) }
                        if state.ended || Task.isCancelled { return .some(nil) }
                        state.waiters[id] = Waiter(from: from, matches: matches, continuation: continuation)
                        return .none
                    }
                    if let immediate { continuation.resume(returning: immediate) }
                }
            } onCancel: {
                let waiter = self.state.withLockedValue { $0.waiters.removeValue(forKey: id) }
                waiter?.continuation.resume(returning: nil)
            }
            guard let found else { throw TimedOut(what: "\(what) (the output ended first)", limit: limit) }
            return found
        }
    }

    /// Waits for a line containing `text`.
    @discardableResult
    public func waitForLine(containing text: String, from: Int = 0, _ limit: Duration = LineLog.defaultWait) async throws -> (index: Int, line: String) {
        try await waitForLine(from: from, "a line containing \"\(text)\"", limit) { $0.contains(text) }
    }
}

/// A wait on a ``LineLog`` that timed out, with the log's last lines: a
/// failure in CI shows what the process was doing instead of the line.
public struct UnseenLine: Error, CustomStringConvertible {
    public var timedOut: TimedOut
    public var lastLines: [String]
    public var description: String {
        let tail = lastLines.isEmpty ? " (it wrote nothing)" : "; its last lines:\n" + lastLines.map { "  | " + $0 }.joined(separator: "\n")
        return timedOut.description + tail
    }
}
