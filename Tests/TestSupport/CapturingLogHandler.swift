public import Logging
import NIOConcurrencyHelpers

/// Keeps every log record so tests can assert on what was (or was not) logged.
public final class LogCapture: Sendable {
    public struct Record: Sendable {
        public var level: Logger.Level
        public var message: String
        public var metadata: [String: String]
    }

    private let records = NIOLockedValueBox<[Record]>([])
    private let waiters = NIOLockedValueBox<[(matches: @Sendable (Record) -> Bool, continuation: CheckedContinuation<Void, Never>)]>([])

    public init() {}

    public var all: [Record] { records.withLockedValue { $0 } }

    /// Returns once a record that `matches` was logged (at once if one was).
    /// Bound it with `withTimeout`.
    public func waitFor(_ matches: @escaping @Sendable (Record) -> Bool) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            // Under the records' lock, so that an append cannot slip between the look and the wait.
            let found = records.withLockedValue { records -> Bool in
                if records.contains(where: matches) { return true }
                waiters.withLockedValue { $0.append((matches, continuation)) }
                return false
            }
            if found { continuation.resume() }
        }
    }

    public func logger(label: String = "test", level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: label) { _ in Handler(capture: self) }
        logger.logLevel = level
        return logger
    }

    fileprivate func append(_ record: Record) {
        let ready = records.withLockedValue { records -> [CheckedContinuation<Void, Never>] in
            records.append(record)
            return waiters.withLockedValue { waiters in
                let ready = waiters.filter { $0.matches(record) }.map(\.continuation)
                waiters.removeAll { $0.matches(record) }
                return ready
            }
        }
        for waiter in ready { waiter.resume() }
    }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var merged = metadata
            merged.merge(event.metadata ?? [:]) { $1 }
            capture.append(Record(
                level: event.level,
                message: "\(event.message)",
                metadata: merged.mapValues { "\($0)" }
            ))
        }
    }
}
