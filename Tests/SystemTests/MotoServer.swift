import Foundation
import Synchronization
import Testing
import TestSupport

/// moto's EC2 server (PyPI `moto[server]`, installed by scripts/test) on a
/// free 127.0.0.1 port with IAM auth enforced, set up by
/// Tests/Fixtures/ec2/moto_setup.py (which turns auth on when done): IAM users and keys, roles to
/// assume, a VPC, instances with several ENIs, secondary IPs, IPv6, Elastic
/// IPs and DNS names, stopped and terminated instances, and more instances
/// than one page. In front of moto the fixture serves an instance metadata
/// service enforcing IMDSv2 whose role keys moto accepts, and logs a
/// `fixture: ...` line per metadata and AssumeRole request.
final class MotoServer: Sendable {
    struct Keys: Decodable, Sendable {
        var access_key: String
        var secret_key: String
    }

    struct Interface: Decodable, Sendable, Equatable {
        var id: String
        var mac: String
        var subnet: String
        var vpc: String
        var device_index: Int
        var private_ips: [String]
        var ipv6: [String]
        var public_ips: [String]
        var private_dns: [String]
        var public_dns: [String]
    }

    struct SessionKeys: Decodable, Sendable {
        var access_key: String
        var secret_key: String
        var session_token: String
    }

    struct Instance: Decodable, Sendable {
        var label: String
        var state: String
        var interfaces: [Interface]
    }

    /// What the fixture created, read back from moto.
    struct Truth: Decodable, Sendable {
        var region: String
        var poller: Keys
        var noperm: Keys
        /// May assume role_arn (with external_id), is refused locked_role_arn.
        var assumer: Keys
        /// role_arn's keys, from STS (a session token, 12 hours).
        var session: SessionKeys
        var external_id: String
        var role_arn: String
        var locked_role_arn: String
        /// The role the metadata service has.
        var instance_role: String
        var instances: [String: Instance]
    }

    static let fixture = BuiltProducts.repositoryRoot + "/Tests/Fixtures/ec2/moto_setup.py"

    let process: ChildProcess
    let port: Int
    let truth: Truth

    var endpoint: String { "http://127.0.0.1:\(port)" }

    private init(process: ChildProcess, port: Int, truth: Truth) {
        self.process = process
        self.port = port
        self.truth = truth
    }

    /// Starts moto and runs the fixture's set-up.
    static func start() async throws -> MotoServer {
        let port = try freePort()
        // One server serves the whole test run; it goes when the test
        // process does (stdin EOF or parent death, see the fixture).
        let server = try await ChildProcess.spawn("/usr/bin/env", ["python3", fixture, "serve", "--port", "\(port)"], environment: withoutProxies)
        do {
            try await server.stderrLines.waitForLine(containing: "Running on", .seconds(60))
            let json = try await run(["python3", fixture, "setup", "--endpoint", "http://127.0.0.1:\(port)"], limit: .seconds(120))
            let truth = try JSONDecoder().decode(Truth.self, from: Data(json.utf8))
            return MotoServer(process: server, port: port, truth: truth)
        } catch {
            server.kill()
            throw error
        }
    }

    /// EC2 API requests moto has served so far (its access log).
    var requests: Int {
        process.stderrLines.lines.filter(Self.isRequest).count
    }

    /// Returns once moto's access log holds `count` requests: it logs a
    /// request after answering it, so a line can follow the answer.
    func waitForRequests(_ count: Int, _ limit: Duration = .seconds(20)) async throws {
        var from = 0
        for seen in 0..<count {
            from = try await process.stderrLines.waitForLine(from: from, "moto's request \(seen + 1) of \(count)", limit, where: Self.isRequest).index + 1
        }
    }

    @Sendable static func isRequest(_ line: String) -> Bool { line.contains("\"POST / HTTP/1.1\"") }

    /// Runs a fixture control command (`lifetime SECONDS`, `mark NAME`,
    /// `imds-probe`) and returns what it printed.
    @discardableResult
    func control(_ arguments: [String], environment: [String: String] = [:]) async throws -> String {
        let output = try await Self.run(
            ["python3", Self.fixture, "control", "--endpoint", endpoint] + arguments, environment: Self.withoutProxies.merging(environment) { $1 }
        )
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Sets the lifetime of the keys the metadata service hands out next.
    func setInstanceRoleLifetime(seconds: Int) async throws {
        try await control(["lifetime", "\(seconds)"])
        try await process.stderrLines.waitForLine(containing: "fixture: lifetime \(seconds)")
    }

    private static let marks = Mutex(0)

    /// Logs a mark and waits for it: every fixture line logged before is
    /// then in ``lines``. Returns the mark's index there.
    func mark() async throws -> Int {
        let name = "m\(Self.marks.withLock { $0 += 1; return $0 })"
        try await control(["mark", name])
        return try await process.stderrLines.waitForLine(containing: "fixture: mark \(name)").index
    }

    /// The fixture's lines between two marks that contain `text`.
    func count(_ text: String, from start: Int, to end: Int) -> Int {
        process.stderrLines.lines[start..<end].filter { $0.contains(text) }.count
    }

    /// This process's environment without proxy variables, for the fixture
    /// and its clients (boto3 and urllib would honour them).
    static var withoutProxies: [String: String] {
        ProcessInfo.processInfo.environment.filter { !["http_proxy", "https_proxy", "no_proxy", "all_proxy"].contains($0.key.lowercased()) }
    }

    func stop() async {
        process.terminate()
        _ = try? await process.waitForExit(.seconds(10))
    }

    struct CommandFailed: Error, CustomStringConvertible {
        var description: String
    }

    private static func run(_ command: [String], limit: Duration = .seconds(60), environment: [String: String] = withoutProxies) async throws -> String {
        let child = try await ChildProcess.spawn("/usr/bin/env", command, environment: environment)
        child.closeStdin()
        let status = try await child.waitForExit(limit)
        let output = try await child.output()
        guard status == 0 else {
            throw CommandFailed(description: "\(command.joined(separator: " ")) exited \(status) (is moto[server] installed? run scripts/test): \(output.stderr)")
        }
        return output.stdout
    }

    /// A port nothing listens on now (bound to 0, read, released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(fd, pointer, length) == 0 else { return -1 }
                return getsockname(fd, pointer, &length)
            }
        }
        guard bound == 0 else { throw CommandFailed(description: "cannot find a free port: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
