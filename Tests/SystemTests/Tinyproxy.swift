import Foundation
import Synchronization
import Testing
import TestSupport

/// Debian's tinyproxy (installed by scripts/test) on a free 127.0.0.1
/// port, in the foreground with its own config file in a temporary
/// directory, logging every request at level Info: the proxy the EC2 proxy
/// tests send the shim through. ``with(basicAuth:_:)`` stops it after the
/// body, and it runs under `setpriv --pdeathsig KILL`, so it goes with the
/// test process whatever happens.
final class Tinyproxy: Sendable {
    let process: ChildProcess
    let port: Int
    private let directory: TemporaryDirectory

    var url: String { "http://127.0.0.1:\(port)" }

    /// Runs `body` with a tinyproxy, stopped afterwards.
    static func with<T>(basicAuth: (user: String, password: String)? = nil, _ body: (Tinyproxy) async throws -> T) async throws -> T {
        let proxy = try await start(basicAuth: basicAuth)
        do {
            let result = try await body(proxy)
            await proxy.stop()
            return result
        } catch {
            await proxy.stop()
            throw error
        }
    }

    /// - Parameter basicAuth: a user and password the proxy requires.
    private static func start(basicAuth: (user: String, password: String)? = nil) async throws -> Tinyproxy {
        let directory = try TemporaryDirectory()
        let port = try MotoServer.freePort()
        var config = """
            Port \(port)
            Listen 127.0.0.1
            Timeout 30
            MaxClients 50
            LogLevel Info

            """
        if let basicAuth { config += "BasicAuth \(basicAuth.user) \(basicAuth.password)\n" }
        let file = directory.file("tinyproxy.conf")
        try config.write(toFile: file, atomically: true, encoding: .utf8)
        // -d: foreground, logging to stdout, which goes to stderr here (read line by line).
        let process = try await ChildProcess.spawn(
            "/bin/sh", ["-c", "exec /usr/bin/setpriv --pdeathsig KILL /usr/bin/tinyproxy -d -c \"$0\" 1>&2", file],
            environment: MotoServer.withoutProxies
        )
        do {
            try await process.stderrLines.waitForLine(containing: "Accepting connections", .seconds(20))
        } catch {
            process.kill()
            directory.remove()
            throw error
        }
        return Tinyproxy(process: process, port: port, directory: directory)
    }

    private init(process: ChildProcess, port: Int, directory: TemporaryDirectory) {
        self.process = process
        self.port = port
        self.directory = directory
    }

    /// Lines it logged so far.
    var lines: [String] { process.stderrLines.lines }

    /// Its log lines from `start` on for a `CONNECT` to `target` (host:port).
    func connects(to target: String, from start: Int = 0, to end: Int? = nil) -> [String] {
        let lines = lines
        return lines[min(start, lines.count)..<min(end ?? lines.count, lines.count)].filter { $0.contains("CONNECT \(target) HTTP/1.1") }
    }

    /// Waits for a `CONNECT` to `target` logged from line `start` on.
    @discardableResult
    func waitForConnect(to target: String, from start: Int = 0) async throws -> Int {
        try await process.stderrLines.waitForLine(containing: "CONNECT \(target) HTTP/1.1", from: start).index
    }

    /// Sends a plain GET to `url` through the proxy (as urllib does, not a
    /// CONNECT) and waits until the proxy has logged it: every line the
    /// proxy logged before is then in ``lines``. Returns its index.
    func barrier(_ moto: MotoServer) async throws -> Int {
        let start = lines.count
        try await moto.control(["mark", "through-proxy"], environment: ["http_proxy": url])
        return try await process.stderrLines.waitForLine(containing: "GET \(moto.endpoint)/fixture-api/mark", from: start).index
    }

    func stop() async {
        process.terminate()
        _ = try? await process.waitForExit(.seconds(10))
        directory.remove()
    }
}
