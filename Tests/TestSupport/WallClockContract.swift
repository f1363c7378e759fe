/// A promise measured in wall-clock time ("a shim exits within 1 s of
/// stdin EOF"), checked on a machine that the rest of the suite may be
/// keeping busy: up to `attempts` fresh measurements, stopping at the first
/// within `limit`. A process that breaks the promise breaks it every time;
/// a run that only met a burst of load passes on the next try.
///
/// - Returns: every measurement taken, the last one the one that counts.
public func measureWallClockContract(
    within limit: Duration,
    attempts: Int = 3,
    _ measure: () async throws -> Duration
) async rethrows -> [Duration] {
    var measured: [Duration] = []
    for _ in 0..<attempts {
        measured.append(try await measure())
        if measured.last! < limit { break }
    }
    return measured
}
