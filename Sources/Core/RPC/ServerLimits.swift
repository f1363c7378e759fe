public import Logging
internal import NIOConcurrencyHelpers
internal import Synchronization

/// Bounds on what the clients of one ttrpc server may hold: descriptors,
/// time, memory and calls. Each is logged and counted when hit (see
/// ``ServerLimitCounters``); the README's "Limits" section lists the
/// defaults and the controller's config keys.
public struct ServerLimits: Sendable, Hashable {
    /// Open connections per listener. A connection over the cap is accepted
    /// and closed at once, so the descriptor is released immediately and a
    /// client can connect again as soon as others close.
    public var maxConnections: Int
    /// A connection with no call in flight that neither sends nor receives
    /// bytes for this long is closed; nil: never.
    public var idleTimeout: Duration?
    /// A frame whose first byte arrived must be complete within this;
    /// otherwise the connection is closed. The clock stops while the server
    /// has stopped reading from the connection (backpressure).
    public var frameTimeout: Duration
    /// Calls one connection may have in flight; at the cap the server stops
    /// reading from it until calls are answered. It also stops reading while
    /// answers pile up unread (the channel is not writable).
    public var requestsPerConnection: Int
    /// Bytes of requests read but not yet served (unfinished frames and
    /// frames waiting for a call slot), across all connections of the
    /// listener. A connection holding more than ``smallFrameAllowance`` whose
    /// next bytes would take the total over this is closed.
    public var bufferedRequestMemory: Int

    /// What one connection may buffer whatever the total: small requests
    /// always get through, however busy the budget.
    public static let smallFrameAllowance = 64 * 1024

    public init(
        maxConnections: Int = 256,
        idleTimeout: Duration? = .seconds(300),
        frameTimeout: Duration = .seconds(10),
        requestsPerConnection: Int = 128,
        bufferedRequestMemory: Int = 64 * 1024 * 1024
    ) {
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeout
        self.frameTimeout = frameTimeout
        self.requestsPerConnection = requestsPerConnection
        self.bufferedRequestMemory = bufferedRequestMemory
    }
}

/// A bound that a client ran into; the raw value is the metrics label.
public enum ServerLimit: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Refused: the listener's connection cap was reached.
    case connections
    /// Closed: idle for the idle timeout.
    case idleTimeout = "idle_timeout"
    /// Closed: a frame (or an HTTP request head) was not completed in time.
    case frameTimeout = "frame_timeout"
    /// Closed: its buffered request bytes would exceed the shared budget.
    case requestMemory = "request_memory"
    /// Reading paused: too many calls in flight or answers not read.
    case backpressure
    /// Refused: the peer process is gone or its uid is no longer allowed.
    case peer
    /// Closed: an HTTP request head did not complete within the header timeout.
    case headerTimeout = "header_timeout"
    /// Refused: an HTTP request head larger than the cap.
    case headerSize = "header_size"
    /// Refused: an HTTP request without the metrics bearer token.
    case unauthorized

    public var description: String { rawValue }
}

/// What a server's limits have done, at one moment.
public struct ServerLimitStats: Sendable, Hashable {
    /// Connections open now.
    public var connections: Int
    /// Request bytes buffered now (unfinished frames and queued frames).
    public var bufferedRequestBytes: Int
    /// The most request bytes that were buffered at once.
    public var peakBufferedRequestBytes: Int
    /// Times each limit was hit since the server started.
    public var hits: [ServerLimit: Int]

    public func hits(_ limit: ServerLimit) -> Int { hits[limit] ?? 0 }
}

/// The shared state of one server's limits: the connection count, the
/// request-memory budget and the counts of limits hit. Safe from any
/// thread; every connection of the server holds it.
public final class ServerLimitCounters: Sendable {
    /// The server's name in logs, e.g. the socket path or "metrics".
    public let server: String
    private let connectionCount = Atomic<Int>(0)
    private let buffered = Atomic<Int>(0)
    private let peakBuffered = Atomic<Int>(0)
    private let counts = NIOLockedValueBox<[ServerLimit: Int]>([:])
    private let logState = NIOLockedValueBox<[ServerLimit: LogWindow]>([:])
    private let onHit: (@Sendable (ServerLimit) -> Void)?
    private let logInterval: Duration

    private struct LogWindow {
        var last: ContinuousClock.Instant
        var suppressed: Int
    }

    /// - Parameters:
    ///   - onHit: told of every hit (e.g. to count it in a metric).
    ///   - logInterval: at most one log line per limit this often; the
    ///     next line says how many were not logged.
    public init(server: String, logInterval: Duration = .seconds(5), onHit: (@Sendable (ServerLimit) -> Void)? = nil) {
        self.server = server
        self.logInterval = logInterval
        self.onHit = onHit
    }

    /// Counts a connection in, unless `cap` are open already.
    public func openConnection(cap: Int) -> Bool {
        var current = connectionCount.load(ordering: .relaxed)
        while current < cap {
            let (exchanged, original) = connectionCount.compareExchange(
                expected: current, desired: current + 1, ordering: .relaxed
            )
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Counts a connection out; returns how many stay open.
    @discardableResult
    public func closeConnection() -> Int {
        connectionCount.subtract(1, ordering: .relaxed).newValue
    }

    /// Changes what one connection holds from `held` to `wanted` bytes.
    /// Growth past ``ServerLimits/smallFrameAllowance`` must fit in `budget`
    /// (false: nothing changed).
    func rebuffer(from held: Int, to wanted: Int, budget: Int) -> Bool {
        let delta = wanted - held
        guard delta > 0, wanted > ServerLimits.smallFrameAllowance else {
            _ = buffered.add(delta, ordering: .relaxed)
            return true
        }
        let total = buffered.add(delta, ordering: .relaxed).newValue
        if total > budget {
            _ = buffered.subtract(delta, ordering: .relaxed)
            return false
        }
        _ = peakBuffered.max(total, ordering: .relaxed)
        return true
    }

    /// Counts a hit and logs it: one warning line naming the server, the
    /// limit and `metadata` (the peer), at most once per log interval per
    /// limit.
    public func hit(_ limit: ServerLimit, _ message: @autoclosure () -> String, metadata: Logger.Metadata, logger: Logger) {
        counts.withLockedValue { $0[limit, default: 0] += 1 }
        onHit?(limit)
        let now = ContinuousClock.now
        let suppressed: Int? = logState.withLockedValue { state in
            if let window = state[limit], now - window.last < logInterval {
                state[limit]?.suppressed += 1
                return nil
            }
            defer { state[limit] = LogWindow(last: now, suppressed: 0) }
            return state[limit]?.suppressed ?? 0
        }
        guard let suppressed else { return }
        var metadata = metadata
        metadata["server"] = "\(server)"
        metadata["limit"] = "\(limit)"
        if suppressed > 0 { metadata["unlogged_before"] = "\(suppressed)" }
        logger.warning("\(message())", metadata: metadata)
    }

    public var stats: ServerLimitStats {
        ServerLimitStats(
            connections: connectionCount.load(ordering: .relaxed),
            bufferedRequestBytes: buffered.load(ordering: .relaxed),
            peakBufferedRequestBytes: peakBuffered.load(ordering: .relaxed),
            hits: counts.withLockedValue { $0 }
        )
    }
}
