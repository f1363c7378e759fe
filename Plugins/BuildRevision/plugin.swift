import Foundation
import PackagePlugin

/// Writes the git revision the package is built from into the target, as
/// `GeneratedBuildRevision.value` (e.g. "3f9c2a1b7d0e", "3f9c2a1b7d0e-dirty"
/// when tracked files have changes, "unknown" outside a git checkout), for
/// `--version` and the `instancepoller_build_info` metric.
///
/// A prebuild command runs at every build; it rewrites the file only when the
/// revision changed, so an unchanged checkout recompiles nothing.
@main
struct BuildRevision: BuildToolPlugin {
    static let script = #"""
        set -u
        rev=$(git -C "$1" rev-parse --short=12 HEAD 2>/dev/null) || rev=unknown
        if [ "$rev" != unknown ] && [ -n "$(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
            rev="$rev-dirty"
        fi
        file="$2/GeneratedBuildRevision.swift"
        text="// Generated at build time by Plugins/BuildRevision; not in git.
        enum GeneratedBuildRevision { static let value = \"$rev\" }"
        if [ "$(cat "$file" 2>/dev/null)" != "$text" ]; then
            mkdir -p "$2" && printf '%s\n' "$text" > "$file"
        fi
        """#

    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let output = context.pluginWorkDirectoryURL.appending(path: "revision")
        return [
            .prebuildCommand(
                displayName: "Reading the git revision",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: ["-c", Self.script, "sh", context.package.directoryURL.path, output.path],
                outputFilesDirectory: output
            )
        ]
    }
}
