import CSystemShims
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

/// Process helpers for processes that are not our children.
public enum ProcessWatch {
    /// Waits (without polling) for process `pid` to exit; true if it did
    /// within `limit`. A process already gone counts as exited.
    public static func waitForExit(pid: Int32, limit: Duration) async -> Bool {
        let milliseconds = Int32(clamping: limit.totalNanosecondsForTests / 1_000_000)
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let result = ip_wait_for_process_exit(pid, milliseconds)
                continuation.resume(returning: result == 1 || (result == -1 && errno == ESRCH))
            }
        }
    }
}

extension Duration {
    var totalNanosecondsForTests: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
