import Foundation
import Testing
import TestSupport

/// The committed man pages and completion scripts (dist/man, dist/completion,
/// written by scripts/gen-manual) are current with the built binaries, and
/// `--version` names the commit they were built from. Fast: the manual
/// plugin is not run here.
@Suite("Man pages, completions and --version")
struct ManualAndCompletionTests {
    static let tools = ["instancepoller", "provider-shim"]

    static func run(_ executable: String, _ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let child = try await ChildProcess.spawn(executable, arguments)
        child.closeStdin()
        let status = try await child.waitForExit(.seconds(60))
        let output = try await child.output()
        return (status, output.stdout, output.stderr)
    }

    static func committed(_ path: String) throws -> String {
        try String(contentsOfFile: "\(BuiltProducts.repositoryRoot)/\(path)", encoding: .utf8)
    }

    /// Every visible subcommand (by path) and the long names of its visible
    /// options and flags, from `--experimental-dump-help`.
    static func visibleCommands(_ tool: String) async throws -> [(path: [String], options: [String])] {
        let dump = try await run(BuiltProducts.path(of: tool), ["--experimental-dump-help"])
        #expect(dump.status == 0)
        let root = try #require((try JSONSerialization.jsonObject(with: Data(dump.stdout.utf8)) as? [String: Any])?["command"] as? [String: Any])
        var found: [(path: [String], options: [String])] = []
        func walk(_ command: [String: Any], path: [String]) {
            let arguments = command["arguments"] as? [[String: Any]] ?? []
            let options = arguments.filter { $0["shouldDisplay"] as? Bool != false }.flatMap { argument in
                (argument["names"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == "long" }.compactMap { $0["name"] as? String }
            }
            found.append((path, options))
            for sub in command["subcommands"] as? [[String: Any]] ?? [] where sub["shouldDisplay"] as? Bool != false {
                guard let name = sub["commandName"] as? String, name != "help" else { continue }
                walk(sub, path: path + [name])
            }
        }
        walk(root, path: [])
        return found
    }

    @Test(arguments: tools)
    func theManPageNamesEverySubcommandAndOption(_ tool: String) async throws {
        let page = try Self.committed("dist/man/\(tool).1")
        #expect(page.contains(".Dt \(tool.uppercased()) 1"), "dist/man/\(tool).1 is \(tool)'s page")
        let commands = try await Self.visibleCommands(tool)
        #expect(commands.count > 1 || tool == "provider-shim")
        var missing: [String] = []
        for command in commands {
            if let name = command.path.last, !page.contains(".It Em \(name)\n") { missing.append(command.path.joined(separator: " ")) }
            for option in command.options where !page.contains("Fl -\(option)") {
                missing.append("\(command.path.joined(separator: " ")) --\(option)")
            }
        }
        #expect(missing.isEmpty, "dist/man/\(tool).1 is out of date (run scripts/gen-manual): it lacks \(missing)")
    }

    @Test(arguments: tools)
    func theCommittedCompletionsAreWhatTheBinaryGenerates(_ tool: String) async throws {
        for shell in ["bash", "zsh", "fish"] {
            let generated = try await Self.run(BuiltProducts.path(of: tool), ["--generate-completion-script", shell])
            #expect(generated.status == 0)
            let committed = try Self.committed("dist/completion/\(tool).\(shell)")
            #expect(generated.stdout == committed, "dist/completion/\(tool).\(shell) is out of date: run scripts/gen-manual")
        }
        let syntax = try await Self.run("/bin/bash", ["-n", "\(BuiltProducts.repositoryRoot)/dist/completion/\(tool).bash"])
        #expect(syntax.status == 0, "bash -n: \(syntax.stderr)")
    }

    @Test(arguments: tools)
    func versionNamesTheVersionAndTheCommitItWasBuiltFrom(_ tool: String) async throws {
        let head = try await Self.run("/usr/bin/git", ["-C", BuiltProducts.repositoryRoot, "rev-parse", "--short=12", "HEAD"])
        #expect(head.status == 0, "\(head.stderr)")
        let revision = head.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(revision.count == 12)
        let version = try await Self.run(BuiltProducts.path(of: tool), ["--version"])
        #expect(version.status == 0)
        #expect(["0.1.0 (revision \(revision))\n", "0.1.0 (revision \(revision)-dirty)\n"].contains(version.stdout), "\(version.stdout)")
    }
}
