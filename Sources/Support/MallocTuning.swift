internal import CSystemShims

/// Process-wide glibc malloc settings for a process that moves large frames.
///
/// By default glibc serves blocks over 128 KiB with fresh mmaps and gives
/// freed heap back to the kernel early, so every 1 MiB frame costs hundreds
/// of page faults; scripts/bench-rpc measured 1 MiB echoes swinging between
/// 0.6 ms and 1.9 ms with it. Keeping blocks up to 8 MiB on the heap and
/// holding up to 32 MiB of freed memory for reuse makes them steady at 0.6 ms.
/// Call once at process start, from a binary's entry point (a library does
/// not change its host's allocator).
public enum MallocTuning {
    /// What a process does with memory, which decides how much freed heap
    /// it keeps for reuse.
    public enum Profile: Sendable {
        /// The controller: its frames are small (a batch's answer is tens of
        /// KiB), and what it frees after a sweep should go back to the
        /// kernel soon, so it holds at most 4 MiB of freed heap (peak RSS at
        /// 100 000 machines: 151 → 140 MiB, scripts/bench).
        case controller
        /// Shims and the RPC benchmark, which move frames up to 4 MiB: up to
        /// 32 MiB of freed heap stays for reuse.
        case largeFrames

        var trimThreshold: Int32 {
            switch self {
            case .controller: 4 << 20
            case .largeFrames: 32 << 20
            }
        }
    }

    /// Blocks up to 8 MiB are served from the heap, not fresh mmaps.
    public static let mmapThreshold: Int32 = 8 << 20

    /// At most this many malloc arenas. glibc's default (8 per core) lets
    /// every event-loop and pool thread fragment its own heap; two keep the
    /// controller at 100 000 machines about 13 MiB smaller at its peak
    /// (scripts/bench: 164 → 151 MiB) with no measurable cost in speed.
    public static let arenaMax: Int32 = 2

    public static func tune(for profile: Profile) {
        #if os(Linux)
        _ = ip_mallopt(IP_M_MMAP_THRESHOLD, mmapThreshold)
        _ = ip_mallopt(IP_M_TRIM_THRESHOLD, profile.trimThreshold)
        _ = ip_mallopt(IP_M_ARENA_MAX, arenaMax)
        #endif
    }
}
