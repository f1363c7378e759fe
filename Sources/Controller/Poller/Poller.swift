internal import Core
internal import Logging
public import ServiceLifecycle
internal import SwiftProtobuf

/// The instance poller (SPEC §6.2–6.3) as a swift-service-lifecycle
/// `Service`: keeps every machine's instance status and network interfaces
/// true to its cloud.
///
/// Each round it reads the events log (changes from outside, other
/// processes included), polls the machines that are due — grouped by
/// (provider, credential), at most `maxIDsPerCall` ids per call, one call in
/// flight per group, each batch behind the credential gate — writes each
/// batch's results in one transaction, and sleeps until the next machine is
/// due or the watch interval passes. A provider error never stops it.
public final class Poller: Service {
    private let engine: PollEngine

    /// - Throws: ``PollerConfig/Invalid`` naming the missing piece.
    public init(config: PollerConfig) throws(PollerConfig.Invalid) {
        try config.validate()
        engine = PollEngine(config: config)
    }

    /// Polls until cancelled or the service group shuts down gracefully
    /// (the round in progress finishes; the sleep is cut short).
    public func run() async throws {
        let engine = self.engine
        try await cancelWhenGracefulShutdown {
            try await engine.run()
        }
    }

    /// Runs one round now (for tests and the CLI's "poll now"): events, then
    /// every due machine. Returns the number of provider calls made.
    @discardableResult
    public func pollOnce() async throws -> Int {
        try await engine.round()
    }
}

