/// What this binary was built from, for `--version` and the
/// `instancepoller_build_info` metric.
public enum BuildInfo {
    /// The git revision of the build (12 hex digits, `-dirty` when tracked
    /// files had changes), or "unknown" when built outside a git checkout.
    public static var revision: String { GeneratedBuildRevision.value }
}

extension BuildInfo {
    /// What `--version` prints: "0.1.0 (revision 3f9c2a1b7d0e)".
    public static func versionLine(_ version: String) -> String {
        "\(version) (revision \(revision))"
    }
}
