import Foundation

/// Processes seen through /proc.
public enum ProcessTree {
    /// The pids whose parent is `pid`.
    public static func children(of pid: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { parent(of: $0) == pid }.sorted()
    }

    /// The parent of `pid`, or nil if it is gone.
    public static func parent(of pid: Int32) -> Int32? {
        // After "pid (comm)": state, ppid, …
        guard let fields = statFields(of: pid), fields.count > 1 else { return nil }
        return Int32(fields[1])
    }

    /// The user + system CPU time `pid` has used so far, or nil if it is gone.
    public static func cpuTime(of pid: Int32) -> Duration? {
        // utime and stime, in clock ticks, are fields 14 and 15 of the line.
        guard let fields = statFields(of: pid), fields.count > 12,
              let user = Int64(fields[11]), let system = Int64(fields[12])
        else { return nil }
        return .nanoseconds((user + system) * 1_000_000_000 / Int64(sysconf(Int32(_SC_CLK_TCK))))
    }

    /// The fields of /proc/<pid>/stat after "pid (comm)".
    private static func statFields(of pid: Int32) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")")
        else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    /// Whether `pid` still exists (and is not a zombie).
    /// The State, PPid and SigBlk/SigIgn/SigCgt lines of /proc/PID/status,
    /// for a failure message.
    public static func status(of pid: Int32) -> String {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return "gone" }
        let wanted = ["State:", "PPid:", "SigPnd:", "ShdPnd:", "SigBlk:", "SigIgn:", "SigCgt:", "Threads:"]
        return text.split(separator: "\n").filter { line in wanted.contains { line.hasPrefix($0) } }.joined(separator: "; ")
    }

    public static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")")
        else { return false }
        return !stat[stat.index(after: close)...].hasPrefix(" Z")
    }

    /// The command line of `pid` (arguments joined by spaces).
    public static func commandLine(of pid: Int32) -> String {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "" }
        return String(decoding: data, as: UTF8.self).split(separator: "\0").joined(separator: " ")
    }

    /// How many descriptors `pid` has open.
    public static func openDescriptors(of pid: Int32) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
    }

    /// The environment `pid` was started with, as NAME=value entries.
    public static func environment(of pid: Int32) -> [String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\0").map(String.init)
    }

    /// The soft and hard limit on open descriptors of `pid`.
    public static func descriptorLimits(of pid: Int32) -> (soft: String, hard: String)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Max open files") })
        else { return nil }
        let fields = line.dropFirst("Max open files".count).split(separator: " ")
        return fields.count >= 2 ? (String(fields[0]), String(fields[1])) : nil
    }

    /// The resident memory of `pid` (VmRSS; with `peak`, its high-water
    /// mark VmHWM), or nil if it is gone.
    public static func residentBytes(of pid: Int32, peak: Bool = false) -> Int? {
        let field = peak ? "VmHWM:" : "VmRSS:"
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field) }),
              let kib = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { return nil }
        return kib * 1024
    }
}
