public import Controller
import Foundation
import NIOConcurrencyHelpers

/// A PostgreSQL cluster the tests of the shared store run against
/// (`scripts/pg-test-cluster`): 127.0.0.1 at a port of its own, a superuser
/// `instancepoller` with a password, fsync off.
///
/// ``shared()`` is the one cluster of this test process: the one
/// `scripts/test` started and named in `INSTANCEPOLLER_TEST_PG_DIR`, or else
/// one started here the first time it is asked for and stopped when the
/// process exits. Tests share it side by side, each in a database of its
/// own (``createDatabase()``). A test that restarts or stops the server
/// takes a ``dedicated()`` cluster instead. Nothing here skips: when
/// PostgreSQL cannot be started, the error says why.
public final class PostgresCluster: Sendable {
    public struct Problem: Error, CustomStringConvertible {
        public var description: String
    }

    /// The directory `scripts/pg-test-cluster` keeps the cluster's details in.
    public let directory: String
    public let host: String
    public let port: Int
    public let user: String
    /// The directory of the server's Unix socket.
    public let socketDirectory: String
    public let password: String
    /// Started for one test, which stops it.
    private let isDedicated: Bool

    static let script = BuiltProducts.repositoryRoot + "/scripts/pg-test-cluster"
    static let psqlPath = "/usr/lib/postgresql/15/bin/psql"

    private init(directory: String, dedicated: Bool) throws {
        func read(_ name: String) throws -> String {
            guard let text = try? String(contentsOfFile: "\(directory)/\(name)", encoding: .utf8) else {
                throw Problem(description: "\(directory) holds no PostgreSQL test cluster (no \(name)): run scripts/pg-test-cluster start \(directory)")
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        self.directory = directory
        host = try read("host")
        guard let port = Int(try read("port")) else { throw Problem(description: "\(directory)/port is not a port number") }
        self.port = port
        user = try read("user")
        socketDirectory = try read("socket")
        password = try read("password")
        isDedicated = dedicated
    }

    /// The cluster the tests of this process share.
    public static func shared() async throws -> PostgresCluster {
        try await sharedCluster.value
    }

    private static let sharedCluster = Task<PostgresCluster, any Error> {
        if let directory = ProcessInfo.processInfo.environment["INSTANCEPOLLER_TEST_PG_DIR"], !directory.isEmpty {
            return try PostgresCluster(directory: directory, dedicated: false)
        }
        let directory = try TemporaryDirectory().path
        try await run(["start", directory])
        ClusterCleanup.add(directory)
        return try PostgresCluster(directory: directory, dedicated: false)
    }

    /// A cluster of its own, for a test that restarts or stops the server;
    /// ``stop()`` it at the end (it is stopped at exit otherwise).
    public static func dedicated() async throws -> PostgresCluster {
        let directory = try TemporaryDirectory().path
        ClusterCleanup.add(directory)
        try await run(["start", directory])
        return try PostgresCluster(directory: directory, dedicated: true)
    }

    /// Where database `database` is, over TCP without TLS, or over the Unix
    /// socket when `socket`.
    public func location(database: String, socket: Bool = false) -> PostgresLocation {
        PostgresLocation(host: host, port: port, user: user, database: database, tls: .disable, socketDirectory: socket ? socketDirectory : nil)
    }

    /// A fresh, uniquely named database: one per test, so that tests run
    /// side by side.
    public func createDatabase() async throws -> String {
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        _ = try await psql("CREATE DATABASE \(name)", database: "postgres")
        return name
    }

    /// Runs `sql` with psql; returns its rows, unaligned (`|` between
    /// columns), one a line.
    @discardableResult
    public func psql(_ sql: String, database: String) async throws -> String {
        var environment = ProcessInfo.processInfo.environment
        environment["PGPASSWORD"] = password
        environment["PGCONNECT_TIMEOUT"] = "10"
        let child = try await ChildProcess.spawn(
            Self.psqlPath, ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", "\(port)", "-U", user, "-d", database, "-c", sql],
            environment: environment)
        child.closeStdin()
        let status = try await child.waitForExit()
        let output = try await child.output()
        guard status == 0 else { throw Problem(description: "psql failed (\(status)): \(output.stderr)") }
        return output.stdout.trimmingCharacters(in: .newlines)
    }

    /// `pg_ctl restart -m fast`: every connection is closed, and the server
    /// is back when this returns. A dedicated cluster's only: the shared
    /// one serves the tests running beside.
    public func restart() async throws {
        guard isDedicated else { throw Problem(description: "restart a dedicated() cluster, not the shared one") }
        try await Self.run(["restart", directory])
    }

    /// Stops the server and removes its data (a dedicated cluster's only).
    public func stop() async throws {
        guard isDedicated else { throw Problem(description: "stop a dedicated() cluster, not the shared one") }
        try await Self.run(["stop", directory])
        ClusterCleanup.remove(directory)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Stops the server but keeps its data: the database cannot be reached
    /// until ``resume()`` (a dedicated cluster's only).
    public func halt() async throws {
        guard isDedicated else { throw Problem(description: "halt a dedicated() cluster, not the shared one") }
        try await Self.run(["halt", directory])
    }

    /// Starts a halted server again, with its data, at its port.
    public func resume() async throws {
        guard isDedicated else { throw Problem(description: "resume a dedicated() cluster, not the shared one") }
        try await Self.run(["start", directory])
    }

    private static func run(_ arguments: [String]) async throws {
        let child = try await ChildProcess.spawn(script, arguments)
        child.closeStdin()
        let status = try await child.waitForExit(.seconds(120))
        let output = try await child.output()
        guard status == 0 else {
            throw Problem(description: "scripts/pg-test-cluster \(arguments.joined(separator: " ")) failed (\(status)): \(output.stderr)")
        }
    }
}

/// The clusters this process started, stopped when it exits.
private enum ClusterCleanup {
    static let directories = NIOLockedValueBox<Set<String>>([])
    static let registered = NIOLockedValueBox(false)

    static func add(_ directory: String) {
        directories.withLockedValue { _ = $0.insert(directory) }
        let first = registered.withLockedValue { registered -> Bool in
            defer { registered = true }
            return !registered
        }
        if first { atexit { ClusterCleanup.stopAll() } }
    }

    static func remove(_ directory: String) {
        directories.withLockedValue { _ = $0.remove(directory) }
    }

    static func stopAll() {
        let all = directories.withLockedValue { $0 }
        let null = open("/dev/null", O_RDWR)
        for directory in all {
            _ = try? ChildProcess.runToEnd(PostgresCluster.script, ["stop", directory], stdin: null, stdout: null, stderr: 2)
            try? FileManager.default.removeItem(atPath: directory)
        }
        if null >= 0 { close(null) }
    }
}
