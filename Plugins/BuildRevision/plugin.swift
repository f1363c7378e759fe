import Foundation
import PackagePlugin

/// Writes the git revision the package is built from into the target, as
/// `GeneratedBuildRevision.value` (e.g. "3f9c2a1b7d0e", "3f9c2a1b7d0e-dirty"
/// when tracked files have changes, "unknown" outside a git checkout), for
/// `--version` and the `instancepoller_build_info` metric.
///
/// A build command whose inputs are the git files a commit, a checkout or a
/// `git add` changes (`.git/HEAD`, the branch's ref, `packed-refs`, the
/// index): the build system runs it again whenever one of them changed, even
/// when SwiftPM reuses its cached build plan (a prebuild command is not run
/// then, and the revision went stale after a commit). It rewrites the file
/// only when the revision changed, so an unchanged checkout recompiles
/// nothing.
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
        let directory = context.pluginWorkDirectoryURL.appending(path: "revision")
        let git = context.package.directoryURL.appending(path: ".git")
        var inputs = ["HEAD", "packed-refs", "index"].map { git.appending(path: $0) }
        // The branch HEAD names, whose file a commit rewrites.
        if let head = try? String(contentsOf: git.appending(path: "HEAD"), encoding: .utf8), head.hasPrefix("ref: ") {
            inputs.append(git.appending(path: head.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        inputs = inputs.filter { FileManager.default.fileExists(atPath: $0.path) }
        return [
            .buildCommand(
                displayName: "Reading the git revision",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: ["-c", Self.script, "sh", context.package.directoryURL.path, directory.path],
                inputFiles: inputs,
                outputFiles: [directory.appending(path: "GeneratedBuildRevision.swift")]
            )
        ]
    }
}
