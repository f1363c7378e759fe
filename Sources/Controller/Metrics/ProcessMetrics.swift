internal import Prometheus
internal import NIOConcurrencyHelpers
#if canImport(Glibc)
internal import Glibc
#endif

/// The standard process metrics, under the names every Prometheus client
/// library uses (docs/DESIGN.md §6.6), read from `/proc/self` at each scrape:
///
/// | metric | type | from |
/// |---|---|---|
/// | `process_cpu_seconds_total` | counter | `stat`: utime + stime |
/// | `process_resident_memory_bytes` | gauge | `stat`: rss × page size |
/// | `process_virtual_memory_bytes` | gauge | `stat`: vsize |
/// | `process_open_fds` | gauge | entries of `fd/` |
/// | `process_max_fds` | gauge | the soft `RLIMIT_NOFILE` |
/// | `process_start_time_seconds` | gauge | `stat`: starttime + `btime` of `/proc/stat` |
///
/// swift-prometheus has no process collector of its own. A file that
/// cannot be read leaves its metrics as they were (a scrape never fails
/// for them).
@_spi(Testing) public final class ProcessMetrics: Sendable {
    private let cpu: Counter
    private let resident: Gauge
    private let virtual: Gauge
    private let openFDs: Gauge
    private let maxFDs: Gauge
    /// The CPU seconds counted so far: the counter only goes up, by the
    /// difference.
    private let cpuCounted = NIOLockedValueBox<Double>(0)
    private let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
    private let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))

    init(registry: PrometheusCollectorRegistry) {
        cpu = registry.makeCounter(name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.")
        resident = registry.makeGauge(name: "process_resident_memory_bytes", help: "Resident memory size in bytes.")
        virtual = registry.makeGauge(name: "process_virtual_memory_bytes", help: "Virtual memory size in bytes.")
        openFDs = registry.makeGauge(name: "process_open_fds", help: "Number of open file descriptors.")
        maxFDs = registry.makeGauge(name: "process_max_fds", help: "Maximum number of open file descriptors.")
        let start = registry.makeGauge(name: "process_start_time_seconds", help: "Start time of the process since unix epoch in seconds.")
        if let stat = Self.read("/proc/self/stat").flatMap(Stat.init), let boot = Self.read("/proc/stat").flatMap(Self.bootTime) {
            start.set(to: boot + stat.startTicks / ticksPerSecond)
        }
        update()
    }

    /// Reads `/proc/self` again.
    func update() {
        if let stat = Self.read("/proc/self/stat").flatMap(Stat.init) {
            let seconds = (stat.userTicks + stat.systemTicks) / ticksPerSecond
            let increase = cpuCounted.withLockedValue { counted -> Double in
                let increase = max(0, seconds - counted)
                counted += increase
                return increase
            }
            if increase > 0 { cpu.increment(by: increase) }
            resident.set(to: stat.residentPages * pageSize)
            virtual.set(to: stat.virtualBytes)
        }
        if let count = Self.openDescriptors() { openFDs.set(to: Double(count)) }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            maxFDs.set(to: limit.rlim_cur == rlim_t.max ? Double.infinity : Double(limit.rlim_cur))
        }
    }

    /// The fields of `/proc/PID/stat` used here (proc(5)).
    public struct Stat: Equatable, Sendable {
        public var userTicks: Double
        public var systemTicks: Double
        /// Clock ticks after boot.
        public var startTicks: Double
        public var virtualBytes: Double
        public var residentPages: Double

        /// nil when `text` is not a stat line. The command name (field 2)
        /// is in parentheses and may hold spaces and parentheses itself:
        /// the fields are counted from the last `)`.
        public init?(_ text: String) {
            guard let close = text.lastIndex(of: ")") else { return nil }
            // Field 3 (state) onwards; field n is at n - 3.
            let fields = text[text.index(after: close)...].split { $0 == " " || $0 == "\n" }
            func field(_ number: Int) -> Double? {
                fields.indices.contains(number - 3) ? Double(fields[number - 3]) : nil
            }
            guard let utime = field(14), let stime = field(15), let start = field(22), let vsize = field(23), let rss = field(24) else {
                return nil
            }
            self.userTicks = utime
            self.systemTicks = stime
            self.startTicks = start
            self.virtualBytes = vsize
            self.residentPages = rss
        }
    }

    /// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
    public static func bootTime(_ text: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst("btime ".count).filter { $0 != " " })
        }
        return nil
    }

    /// The entries of `/proc/self/fd`, less the one listing them.
    static func openDescriptors() -> Int? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in name.first == UInt8(ascii: ".") }
            if !isDot { count += 1 }
        }
        return max(0, count - 1)
    }

    /// A small file of /proc, whole; nil if it cannot be read.
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = Glibc.read(fd, &buffer, buffer.count)
            if count < 0 { return nil }
            if count == 0 { break }
            bytes += buffer[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
