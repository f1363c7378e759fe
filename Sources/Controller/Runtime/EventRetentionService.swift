internal import Core
public import Logging
public import ServiceLifecycle

/// Keeps the events log to the config's `events:` bounds (docs/DESIGN.md
/// §6.1): at its start and then every ``EventRetention/pruneInterval`` on
/// the injected clock, removes the events older than `keep_days` and all
/// but the newest `keep_revisions`. The latest revision stays what it was,
/// so `Events` long polls and watchers go on from it.
///
/// A store error is logged as a warning and the next round tries again; it
/// never stops the controller. Without bounds it only waits for the stop.
/// It stops on graceful shutdown (a prune in progress is cancelled: its
/// transaction does not commit).
public struct EventRetentionService: Service {
    let store: any MachineStore
    let retention: EventRetention
    let clock: any PollClock
    let logger: Logger

    public init(store: any MachineStore, retention: EventRetention, clock: any PollClock, logger: Logger) {
        self.store = store
        self.retention = retention
        self.clock = clock
        self.logger = logger
    }

    public func run() async {
        guard retention.isEnabled else {
            // A service of the group must not end before its turn.
            try? await gracefulShutdown()
            return
        }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await prune()
                do {
                    try await clock.sleep(until: clock.now + retention.pruneInterval)
                } catch {
                    return  // cancelled: the controller stops
                }
            }
        }
    }

    /// One round: what the bounds say is old goes.
    func prune() async {
        let before = retention.keepFor.map { clock.now + (.zero - $0) }
        do {
            let removed = try await store.pruneEvents(before: before, keepingLast: retention.keepRevisions)
            if removed > 0 { logger.info("events pruned", metadata: ["removed": "\(removed)"]) }
        } catch {
            guard !Task.isCancelled else { return }
            logger.warning("events not pruned, trying again in \(retention.pruneInterval): \(error)")
        }
    }
}
