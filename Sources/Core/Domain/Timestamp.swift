/// A point in wall-clock time, in nanoseconds since the Unix epoch.
///
/// Schedules are stored with these, so that a restarted controller resumes
/// them: a monotonic clock's instants mean nothing to another process.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanosecondsSinceEpoch: Int64

    public init(nanosecondsSinceEpoch: Int64) {
        self.nanosecondsSinceEpoch = nanosecondsSinceEpoch
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.nanosecondsSinceEpoch < rhs.nanosecondsSinceEpoch
    }

    public static func + (lhs: Timestamp, rhs: Duration) -> Timestamp {
        Timestamp(nanosecondsSinceEpoch: lhs.nanosecondsSinceEpoch &+ rhs.totalNanoseconds)
    }

    public static func - (lhs: Timestamp, rhs: Timestamp) -> Duration {
        .nanoseconds(lhs.nanosecondsSinceEpoch &- rhs.nanosecondsSinceEpoch)
    }

    public var description: String {
        let seconds = Double(nanosecondsSinceEpoch) / 1e9
        return "t=\(seconds)s"
    }
}
