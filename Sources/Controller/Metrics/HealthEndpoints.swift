/// What `/readyz` on the metrics listener reports (docs/DESIGN.md §6.6):
/// ready, or one problem per line.
public protocol HealthReporting: Sendable {
    /// Why the controller is not ready now (empty: it is).
    func problems() async -> [HealthProblem]
}

/// One reason the controller is not ready, e.g. `provider aws: shim down
/// (exited with status 3), restarting in 2s`.
public struct HealthProblem: Sendable, Hashable, CustomStringConvertible {
    /// What is not ready: `controller`, `store`, `poll loop`, `provider NAME`.
    public var subject: String
    /// What is wrong, in a few words: `shim down`, `unavailable`, `no turn for 45s`.
    public var problem: String
    /// Why, in the words of the part that failed (a shim's exit, a database
    /// error): shown only to a caller allowed to see the metrics.
    public var detail: String?
    /// What happens next, e.g. `restarting in 2s`.
    public var next: String?

    public init(subject: String, problem: String, detail: String? = nil, next: String? = nil) {
        self.subject = subject
        self.problem = problem
        self.detail = detail
        self.next = next
    }

    /// One line; `detailed`: with ``detail``.
    public func line(detailed: Bool) -> String {
        var text = "\(subject): \(problem)"
        if detailed, let detail, !detail.isEmpty { text += " (\(HealthProblem.oneLine(detail)))" }
        if let next { text += ", \(next)" }
        return text
    }

    public var description: String { line(detailed: true) }

    /// Line breaks become spaces, and a long text is cut (a shim's stderr
    /// tail can be long): one problem, one line.
    static func oneLine(_ text: String, limit: Int = 300) -> String {
        var flat = String(text.map { $0.isNewline ? " " : $0 })
        if flat.count > limit { flat = String(flat.prefix(limit)) + "…" }
        return flat
    }
}

/// The answers of `/healthz` and `/readyz`: plain text, `ok` or one
/// problem per line.
enum HealthAnswer {
    /// `/healthz`: the process serves.
    static let alive = "ok\n"

    /// `/readyz`'s status (200 or 503) and body.
    static func readiness(_ problems: [HealthProblem], detailed: Bool) -> (ready: Bool, body: String) {
        guard !problems.isEmpty else { return (true, "ok\n") }
        return (false, problems.map { $0.line(detailed: detailed) + "\n" }.joined())
    }
}
