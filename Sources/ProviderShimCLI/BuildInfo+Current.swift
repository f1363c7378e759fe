import Core
import Support

extension BuildInfo {
    /// This binary's version and git revision.
    static let current = BuildInfo(version: ProductVersion.current, revision: GeneratedBuildRevision.value)
}
