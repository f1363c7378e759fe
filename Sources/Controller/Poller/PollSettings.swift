/// The schedule's knobs (`docs/DESIGN.md` §6.2), all configurable.
public struct PollSettings: Hashable, Sendable {
    /// First interval of the short group.
    public var shortPoll: Duration
    /// Factor each bump multiplies the interval by.
    public var backoffFactor: Double
    /// Largest short-group interval.
    public var shortPollCap: Duration
    /// Interval of the long group.
    public var longPoll: Duration
    /// Fraction of the long interval each long-group due time may move by,
    /// so that a large fleet is not polled in one burst.
    public var longPollJitter: Double
    /// Most instance ids per provider call.
    public var maxIDsPerCall: Int

    public init(
        shortPoll: Duration = .seconds(3),
        backoffFactor: Double = 2.0,
        shortPollCap: Duration = .seconds(60),
        longPoll: Duration = .seconds(15 * 60),
        longPollJitter: Double = 0.10,
        maxIDsPerCall: Int = 200
    ) {
        self.shortPoll = shortPoll
        self.backoffFactor = backoffFactor
        self.shortPollCap = shortPollCap
        self.longPoll = longPoll
        self.longPollJitter = longPollJitter
        self.maxIDsPerCall = maxIDsPerCall
    }

    /// What is wrong with these settings, or nil.
    public func problem() -> String? {
        if shortPoll <= .zero { return "short poll interval must be positive" }
        if backoffFactor < 1 { return "backoff factor must be at least 1" }
        if shortPollCap < shortPoll { return "short poll cap must not be below the short poll interval" }
        if longPoll <= .zero { return "long poll interval must be positive" }
        if !(0..<1).contains(longPollJitter) { return "long poll jitter must be in [0, 1)" }
        if maxIDsPerCall < 1 { return "max ids per call must be at least 1" }
        return nil
    }
}
