import Foundation
import TestSupport

/// containerd's Go ttrpc 1.1.1 as a peer: Tests/Fixtures/go built in GOPATH
/// mode against the Debian packages, once per test run.
enum GoFixtures {
    static let repositoryRoot: String = {
        // Tests/InteropTests/GoFixtures.swift → repository root
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }()

    static let outputDirectory = repositoryRoot + "/.build/interop-go"

    private static let build = Task<Void, any Error> {
        let script = repositoryRoot + "/Tests/Fixtures/go/build.sh"
        let child = try await ChildProcess.spawn("/bin/bash", [script, outputDirectory])
        let status = try await child.waitForExit(.seconds(600))
        guard status == 0 else {
            throw FixtureBuildFailed(output: child.stderr)
        }
    }

    struct FixtureBuildFailed: Error, CustomStringConvertible {
        var output: String
        var description: String { "building the Go ttrpc fixtures failed (is golang-github-containerd-ttrpc-dev installed? run scripts/test):\n\(output)" }
    }

    /// Path of a built fixture binary (`ttrpc-echo-server` or `ttrpc-echo-client`).
    static func binary(_ name: String) async throws -> String {
        try await build.value
        return outputDirectory + "/" + name
    }
}
