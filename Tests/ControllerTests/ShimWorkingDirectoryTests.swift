@_spi(Testing) import Controller
import Support
import ControlAPI
import Core
import Foundation
import Testing
import TestSupport

/// A shim runs in its command's working directory (issue 17, item 4): the
/// config file's for a configured shim, so that relative arguments are
/// found whatever the controller's own working directory is.
@Suite("Shim working directory")
struct ShimWorkingDirectoryTests {
    @Test func theShimRunsInItsWorkingDirectory() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let place = directory.file("conf")
        try FileManager.default.createDirectory(atPath: place, withIntermediateDirectories: false)
        #expect(FileManager.default.currentDirectoryPath != place)
        let command = ShimCommand(executable: "/bin/sh", arguments: ["-c", "echo \"in $(pwd -P)\" >&2; exit 3"], workingDirectory: place)
        await #expect {
            _ = try await ShimLauncher.start(provider: "where", command: command, socketPath: directory.file("s.sock"), logger: LogCapture().logger())
        } throws: { error in
            "\(error)".contains("in \(place)")
        }
    }

    @Test func aFakeShimFindsItsRelativeScenarioThere() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try "instances:\n  - id: i-here\n    timeline:\n      - at: 0s\n        state: running\n"
            .write(toFile: directory.file("here.yaml"), atomically: true, encoding: .utf8)
        let command = ShimCommand(
            executable: ShimLauncherTests.fake.executable, arguments: ["fake", "--scenario", "here.yaml"], workingDirectory: directory.path
        )
        let shim = try await ShimLauncher.start(provider: "fake", command: command, socketPath: directory.file("s.sock"), logger: LogCapture().logger())
        let found = try await shim.client.instances(cloud: .init(), credential: .init(), ids: ["i-here"], timeout: .seconds(5))
        #expect(found.map(\.found) == [true])
        shim.process.closeStdin()
        #expect(await withTimeoutResult(.seconds(5)) { await shim.process.waitForExit() } == 0)
    }

    @Test func aMissingWorkingDirectoryIsAFailedStartNamingIt() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let command = ShimCommand(executable: "/bin/true", workingDirectory: directory.file("gone"))
        await #expect {
            _ = try await ShimLauncher.start(provider: "lost", command: command, socketPath: directory.file("s.sock"), logger: LogCapture().logger())
        } throws: { error in
            "\(error)".contains("cannot start /bin/true in \(directory.file("gone")): No such file or directory")
        }
    }

    @Test func aConfiguredShimRunsInTheConfigFilesDirectory() throws {
        let config = try ControllerConfig.parse("""
            providers:
              aws:
                shim: {command: /bin/true, args: [--scenario, s.yaml]}
                cloud: {type: ec2}

            """, file: "/etc/ip/config.yaml", environment: [:])
        #expect(config.directory == "/etc/ip")
        #expect(config.provider(named: "aws")?.shim.workingDirectory == "/etc/ip")
    }
}
