internal import Core
internal import Foundation
internal import Yams
public import Support

extension ControllerConfig {
    /// Where a config puts the controller's runtime directory, read for a
    /// CLI command (`instancepoller status --config FILE`), which needs
    /// nothing else from it.
    public struct RuntimeDirectoryReading: Sendable {
        /// The runtime directory: the config's `runtime_directory`
        /// (relative to the file's directory), else the default.
        public var path: String
        /// The config names it (false: the default).
        public var named: Bool
        /// The first error the controller would find in the config, if any:
        /// the CLI warns and goes on.
        public var problem: YAMLFileError?
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
            var reading = RuntimeDirectoryReading(path: defaultRuntimeDirectory(environment: environment), named: false)
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
