@_spi(Testing) import Controller
import ControlAPI
import Core
import Foundation
import Testing
import TestSupport
import Support

/// What a CLI command reads from a config (`--config FILE`): only its
/// runtime directory; the rest is checked without reading secrets, and its
/// first error is reported, not thrown.
@Suite("Config: the runtime directory alone")
struct ConfigRuntimeDirectoryTests {
    static let provider = """
        providers:
          aws:
            shim: {command: /bin/true}
            cloud: {type: ec2}

        """

    /// Writes `text` as config.yaml in a fresh directory; returns its path.
    static func config(_ directory: TemporaryDirectory, _ text: String) throws -> String {
        let path = directory.file("config.yaml")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func aRelativeRuntimeDirectoryIsRelativeToTheFileAndAGoodConfigHasNoProblem() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try Self.config(directory, "store: s.db\nruntime_directory: sub/../run\n" + Self.provider)
        let reading = try ControllerConfig.runtimeDirectory(configPath: path, environment: [:])
        #expect(reading.path == directory.file("run"))
        #expect(reading.named)
        #expect(reading.problem == nil)
    }

    @Test func withoutRuntimeDirectoryItIsTheDefault() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try Self.config(directory, "store: s.db\n" + Self.provider)
        let environment = ["XDG_RUNTIME_DIR": "/run/user/1234"]
        let reading = try ControllerConfig.runtimeDirectory(configPath: path, environment: environment)
        #expect(reading.path == ControllerConfig.defaultRuntimeDirectory(environment: environment))
        #expect(!reading.named)
    }

    @Test func otherErrorsAreReportedNotThrown() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // No providers, a bad poll setting and an unknown key: the first
        // error in the controller's order (the unknown key) is the one.
        let path = try Self.config(directory, "store: s.db\nruntime_directory: run\npoll: {short_poll: 0s}\nbogus: 1\n")
        let reading = try ControllerConfig.runtimeDirectory(configPath: path, environment: [:])
        #expect(reading.path == directory.file("run"))
        let problem = try #require(reading.problem)
        #expect(problem.file == path && problem.line == 4)
        #expect(problem.problem.hasPrefix("unknown key \"bogus\""))
        do {
            _ = try ControllerConfig.load(path: path, environment: [:])
            Issue.record("the full load must fail too")
        } catch {
            #expect(error == problem, "the same first error as the controller's")
        }
    }

    @Test func credentialAndTokenFilesAreNotRead() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // Files the controller would refuse (missing; readable by others):
        // not opened here, so no problem.
        let token = directory.file("token")
        _ = FileManager.default.createFile(atPath: token, contents: Data("t0ken\n".utf8), attributes: [.posixPermissions: 0o644])
        let path = try Self.config(directory, """
            store: s.db
            runtime_directory: run
            metrics: {address: 127.0.0.1:9464, bearer_token_file: token}
            \(Self.provider)
            credentials:
              - {provider: aws, name: main, auth_type: token, file: missing.yaml}

            """)
        let reading = try ControllerConfig.runtimeDirectory(configPath: path, environment: [:])
        #expect(reading.problem == nil, "\(String(describing: reading.problem))")
        #expect(reading.path == directory.file("run"))
        #expect(throws: YAMLFileError.self, "the controller reads them") { try ControllerConfig.load(path: path, environment: [:]) }
    }

    @Test func aWrongRuntimeDirectoryOrAnUntrustedFileIsThrown() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var path = try Self.config(directory, "runtime_directory: \"\"\n")
        #expect {
            _ = try ControllerConfig.runtimeDirectory(configPath: path, environment: [:])
        } throws: { error in
            "\(error)".contains("runtime_directory: the path is empty")
        }
        path = try Self.config(directory, "runtime_directory: [a\n")
        #expect(throws: YAMLFileError.self) { _ = try ControllerConfig.runtimeDirectory(configPath: path, environment: [:]) }
        // It names the socket the CLI talks to: a file others can change is refused.
        path = try Self.config(directory, "runtime_directory: run\n" + Self.provider)
        chmod(path, 0o666)
        #expect {
            _ = try ControllerConfig.runtimeDirectory(configPath: path, environment: [:])
        } throws: { error in
            "\(error)".contains("chmod go-w")
        }
    }
}
