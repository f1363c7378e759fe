import Foundation

/// A provider shim written in C (Tests/Fixtures/c-shim: hand-written ttrpc
/// framing, protobuf-c messages), built once per test run: the protocol
/// needs nothing from Swift or Go.
public enum CShimFixture {
    public static let outputDirectory = BuiltProducts.repositoryRoot + "/.build/c-shim"

    private static let build = Task<Void, any Error> {
        let script = BuiltProducts.repositoryRoot + "/Tests/Fixtures/c-shim/build.sh"
        let child = try await ChildProcess.spawn("/bin/bash", [script, outputDirectory])
        let status = try await child.waitForExit(.seconds(300))
        guard status == 0 else {
            throw FixtureBuildFailed(output: child.stderr)
        }
    }

    struct FixtureBuildFailed: Error, CustomStringConvertible {
        var output: String
        var description: String {
            "building the C shim fixture failed (are gcc, protobuf-c-compiler and libprotobuf-c-dev installed? run scripts/test):\n\(output)"
        }
    }

    /// Path of the built `c-shim` binary.
    public static func binary() async throws -> String {
        try await build.value
        return outputDirectory + "/c-shim"
    }
}
