import Foundation

/// Executables SwiftPM built next to the test bundle (test targets depend on
/// their executable targets so that they are built).
public enum BuiltProducts {
    public static let repositoryRoot: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// Path of the built executable `name`, e.g. "provider-shim".
    public static func path(of name: String) -> String {
        var candidates: [String] = []
        if let runner = CommandLine.arguments.first {
            var directory = URL(fileURLWithPath: runner).deletingLastPathComponent()
            // Inside an .xctest bundle directory on some platforms.
            if directory.pathExtension == "xctest" { directory = directory.deletingLastPathComponent() }
            candidates.append(directory.appendingPathComponent(name).path)
        }
        candidates.append(repositoryRoot + "/.build/debug/" + name)
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }
}
