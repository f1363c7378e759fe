internal import Core
internal import Foundation
internal import Yams
public import Support
#if canImport(Glibc)
internal import Glibc
#endif

extension ControllerConfig {
    /// Where a config puts the controller's runtime directory, read for a
    /// CLI command (`instancepoller status --config FILE`), which needs
    /// nothing else from it.
    public struct RuntimeDirectoryReading: Sendable {
        /// The runtime directory: the config's `runtime_directory`
        /// (relative to the file's directory), else where a CLI command
        /// looks by default (``clientRuntimeDirectory(environment:uid:ownerOf:)``).
        public var path: String
        /// The config names it (false: the default).
        public var named: Bool
        /// The first error the controller would find in the config, if any:
        /// the CLI warns and goes on.
        public var problem: YAMLFileError?
    }

    /// Where a CLI command looks for the controller when nothing names it:
    /// as the controller would default (`$RUNTIME_DIRECTORY`, then
    /// `/run/instancepoller` for root); for another user also
    /// `/run/instancepoller` when that is this user's (the systemd unit's
    /// `RuntimeDirectory=` of a controller running as this user, e.g.
    /// `sudo -u instancepoller instancepoller status`); else the user's
    /// default.
    ///
    /// - Parameter ownerOf: the owner uid of a directory (nil: none there);
    ///   tests give their own.
    public static func clientRuntimeDirectory(
        environment: [String: String]? = nil, uid: UInt32? = nil, ownerOf: (String) -> UInt32? = Self.directoryOwner
    ) -> String {
        let environment = environment ?? ProcessInfo.processInfo.environment
        let uid = uid ?? getuid()
        if unitDirectory("RUNTIME_DIRECTORY", environment) == nil, uid != 0, ownerOf(systemRuntimeDirectory) == uid {
            return systemRuntimeDirectory
        }
        return defaultRuntimeDirectory(environment: environment, uid: uid)
    }

    /// The runtime directory of a controller run by root or by the systemd
    /// unit (`RuntimeDirectory=instancepoller`).
    public static let systemRuntimeDirectory = "/run/instancepoller"

    /// The owner of the directory at `path` (not following a symbolic link).
    public static func directoryOwner(_ path: String) -> UInt32? {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else { return nil }
        return info.st_uid
    }

    /// Reads just `runtime_directory` from the config at `configPath`, and
    /// checks the rest as the controller would without reading any
    /// credential file or the metrics bearer token file.
    ///
    /// - Throws: ``YAMLFileError`` when the file cannot be trusted or read
    ///   (the same rules as ``load(path:environment:)``: it names the socket
    ///   the CLI talks to), is not YAML, or its `runtime_directory` is wrong.
    public static func runtimeDirectory(configPath: String, environment: [String: String]? = nil) throws(YAMLFileError) -> RuntimeDirectoryReading {
        let environment = environment ?? ProcessInfo.processInfo.environment
        let (text, _) = try readTrusted(configPath)
        return try YAMLReader.parse(text, file: configPath) { reader, root throws(YAMLFileError) in
            guard case .mapping = root else {
                throw reader.fail(root, "", "expected a mapping with keys such as store, runtime_directory, providers")
            }
            var reading = RuntimeDirectoryReading(path: clientRuntimeDirectory(environment: environment), named: false)
            if let node = root["runtime_directory"] {
                reading.path = try reader.path(node, "runtime_directory")
                reading.named = true
            }
            do throws(YAMLFileError) {
                _ = try reader.controllerConfig(root, environment: environment, readingSecrets: false)
            } catch {
                reading.problem = error
            }
            return reading
        }
    }
}
