/// What a binary was built from: its version and git revision, for
/// `--version` and the `instancepoller_build_info` metric. The executables
/// make it from `GeneratedBuildRevision.value`, which Plugins/BuildRevision
/// writes at build time (12 hex digits, `-dirty` when tracked files had
/// changes, "unknown" outside a git checkout).
public struct BuildInfo: Sendable, Equatable {
    public var version: String
    public var revision: String

    public init(version: String, revision: String) {
        self.version = version
        self.revision = revision
    }

    /// What `--version` prints: "0.1.0 (revision 3f9c2a1b7d0e)".
    public var versionLine: String { "\(version) (revision \(revision))" }
}
