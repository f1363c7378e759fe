internal import Core
public import ServiceLifecycle

/// The instance poller as a swift-service-lifecycle `Service`: keeps every
/// machine's instance status and network interfaces true to its cloud.
///
/// Each round it reads the events log (changes from outside, other
/// processes included), polls the machines that are due — grouped by
/// (provider, credential), at most `maxIDsPerCall` ids per call, one call in
/// flight per pair, each batch behind the credential gate — and writes each
/// batch's results in one transaction before it remembers them. Then it
/// sleeps until the next due machine of a pair that is not paused, the end
/// of a pause, a shim serving again, or the next events read (the watch
/// interval), whichever comes first: a throttled cloud or a dead shim never
/// makes it spin. A provider or store error never stops it.
public final class Poller: Service {
    private let engine: PollEngine

    /// - Throws: ``PollerConfig/Invalid`` naming the missing piece.
    public init(config: PollerConfig) throws(PollerConfig.Invalid) {
        try config.validate()
        engine = PollEngine(config: config)
    }

    /// The loop's pulse: when it last turned, and how many machines it tracks.
    public var heartbeat: PollHeartbeat { engine.heartbeat }

    /// Polls until cancelled or the service group shuts down gracefully
    /// (the round in progress finishes; the sleep is cut short).
    public func run() async throws {
        let engine = self.engine
        try await cancelWhenGracefulShutdown {
            try await engine.run()
        }
    }

    /// Says that this process changed the store (a machine or credential
    /// added, changed or removed), so that the loop reads the change at once
    /// instead of at its next events read. Wire it to the store's change
    /// handler; changes by other processes are read every watch interval.
    public func storeChanged() {
        engine.wakeup.storeChanged()
    }

    /// Runs one round now (for tests and the CLI's "poll now"): events, then
    /// every due machine. Returns the number of provider calls made.
    @discardableResult
    public func pollOnce() async throws -> Int {
        try await engine.round()
    }
}

