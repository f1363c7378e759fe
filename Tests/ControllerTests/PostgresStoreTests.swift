@_spi(Testing) @testable import Controller
import Core
import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing
import TestSupport

/// What only the PostgreSQL store has: its schema and migrations, reaching
/// (or not) the server, leases and fencing on the database's clock, and
/// notifications between controllers. The behaviour both stores share is
/// in MachineStoreTests.
@Suite("PostgreSQL machine store")
struct PostgresStoreTests {
    typealias S = StoreSamples

    /// A port nothing listens on.
    static func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound)
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The database's clock, in nanoseconds since the epoch.
    static func databaseNow(_ fixture: MachineStoreFixture) async throws -> Timestamp {
        let text = try #require(try await fixture.column("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint").first)
        return Timestamp(nanosecondsSinceEpoch: try #require(Int64(text)) * 1000)
    }

    /// Runs `body` with a fixture on a cluster of its own, stopped after.
    static func withDedicatedCluster(_ body: (PostgresCluster, MachineStoreFixture) async throws -> Void) async throws {
        let cluster = try await PostgresCluster.dedicated()
        do {
            try await MachineStoreFixture.with(.postgres, cluster: cluster) { fixture in try await body(cluster, fixture) }
        } catch {
            try? await cluster.stop()
            throw error
        }
        try await cluster.stop()
    }

    // MARK: Schema

    @Test func controllersStartingTogetherMigrateTheSchemaOnce() async throws {
        try await MachineStoreFixture.with(.postgres) { fixture in
            let stores = try await withThrowingTaskGroup(of: PostgresMachineStore.self) { group in
                for _ in 0..<4 { group.addTask { try await fixture.openPostgres() } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(stores.count == 4)
            #expect(try await fixture.column("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename") == [
                "controllers", "credentials", "events", "leases", "machines", "revision_counter", "schedule", "schema_migrations",
                "status_history",
            ])
            #expect(try await fixture.column("SELECT version FROM schema_migrations") == ["1"])
            #expect(try await fixture.column("SELECT column_name FROM information_schema.columns WHERE table_name = 'machines' ORDER BY ordinal_position") == [
                "id", "provider", "credential", "instance_id", "life", "manual", "agent_status", "status_state",
                "status_raw", "status_message", "status_updated_at", "interfaces", "poll_error",
                "agent_started_at", "agent_message", "status_seq",
            ], "the SQLite store's columns")
            #expect(try await fixture.column("SELECT value FROM revision_counter") == ["0"])
            // Once more changes nothing.
            try await stores[0].migrate()
            #expect(try await fixture.column("SELECT count(*) FROM schema_migrations") == ["1"])
            try await stores[1].addMachine(S.machine("m1"))
            #expect(try await stores[2].machines().map(\.id) == ["m1"])
        }
    }

    // MARK: Reaching the server

    @Test func anUnreachableServerIsUnavailableSayingWhereButNeverThePassword() async throws {
        let port = try Self.closedPort()
        let location = PostgresLocation(host: "127.0.0.1", port: port, user: "instancepoller", database: "fleet", tls: .disable)
        let password = "never-shown-password"
        let logs = LogCapture()
        let store = PostgresMachineStore(
            location: location, password: password, sealer: nil, clock: ManualPollClock(), logger: logs.logger(),
            connectionWait: .milliseconds(500))
        let migrating = try #require(await #expect(throws: StoreError.self) { try await store.migrate() })
        #expect(migrating.kind == .unavailable)
        #expect(migrating.message == "cannot reach PostgreSQL at postgres://instancepoller@127.0.0.1:\(port)/fleet?sslmode=disable: Connection refused")

        let run = Task { try await store.run() }
        let adding = try #require(await #expect(throws: StoreError.self) { try await store.addMachine(S.machine("m1")) })
        #expect(adding.kind == .unavailable)
        #expect(adding.message.hasPrefix("adding machine m1 in \(location): cannot reach PostgreSQL: "), "\(adding)")
        #expect(adding.message.hasSuffix("(waited 0.5 seconds)"), "\(adding)")
        #expect(RPCError(from: adding).code.isRetryable)
        // The listener says so too, as a warning, once.
        try await withTimeout(.seconds(10), "the warning") {
            await logs.waitFor { $0.level == .warning && $0.message.contains("cannot listen for changes") }
        }
        run.cancel()
        try await run.value
        let stopped = try #require(await #expect(throws: StoreError.self) { try await store.addMachine(S.machine("m1")) })
        #expect(stopped == StoreError(.unavailable, "adding machine m1 in \(location): the store has stopped"))
        for record in logs.all {
            #expect(!record.message.contains(password) && !record.metadata.values.contains { $0.contains(password) })
        }
        #expect(!migrating.message.contains(password) && !adding.message.contains(password))
        #expect(logs.all.filter { $0.level == .warning }.count == 1, "later failures are quieter")
    }

    @Test func aWrongPasswordFailsAsAPreconditionWithoutRepeatingIt() async throws {
        let cluster = try await PostgresCluster.shared()
        let store = PostgresMachineStore(
            location: cluster.location(database: "postgres"), password: "wrong-password-value", sealer: nil, clock: ManualPollClock(),
            logger: LogCapture().logger())
        let refused = try #require(await #expect(throws: StoreError.self) { try await store.migrate() })
        #expect(refused.kind == .failedPrecondition)
        #expect(refused.message.hasPrefix("cannot connect to PostgreSQL at \(cluster.location(database: "postgres")): "), "\(refused)")
        #expect(refused.message.contains("password authentication failed") && refused.message.contains("28P01"), "\(refused)")
        #expect(!refused.message.contains("wrong-password-value"))
    }

    @Test func theUnixSocketServesAsTCPDoesAndEarlyCallsWaitForRun() async throws {
        let cluster = try await PostgresCluster.shared()
        let database = try await cluster.createDatabase()
        let location = cluster.location(database: database, socket: true)
        #expect(location.description.hasSuffix("&host=\(cluster.socketDirectory)"))
        let store = PostgresMachineStore(location: location, password: cluster.password, sealer: nil, clock: ManualPollClock(), logger: LogCapture().logger())
        try await store.migrate()
        // Services start together: what comes before run() waits for it.
        let early = Task { try await store.addMachine(S.machine("m1")) }
        let run = Task { try await store.run() }
        try await early.value
        #expect(try await store.machines().map(\.id) == ["m1"])
        run.cancel()
        try await run.value
    }

    // MARK: Server errors

    @Test func serverErrorsKeepTheirKindAndNeverQuoteTheValues() async throws {
        try await MachineStoreFixture.with(.postgres) { fixture in
            let store = try await fixture.openPostgres()
            let location = try #require(fixture.cluster).location(database: fixture.database)
            try await fixture.execute("ALTER TABLE machines ADD CONSTRAINT short_ids CHECK (length(id) < 20)")
            let check = try #require(await #expect(throws: StoreError.self) { try await store.addMachine(S.machine("m-with-a-very-long-id")) })
            #expect(check.kind == .failedPrecondition)
            #expect(
                check.message == "adding machine m-with-a-very-long-id in \(location): "
                    + "new row for relation \"machines\" violates check constraint \"short_ids\" (SQLSTATE 23514)")

            // The row's values (a credential's secrets) stay out.
            try await fixture.execute("ALTER TABLE credentials ADD CONSTRAINT short_types CHECK (length(auth_type) < 5)")
            let secret = "do-not-show-this-secret"
            let credential = StoredCredential(provider: "aws", name: "main", authType: "access-key", attributes: ["secret-key": secret])
            let refused = try #require(await #expect(throws: StoreError.self) { try await store.setCredential(credential) })
            #expect(refused.kind == .failedPrecondition && refused.message.hasPrefix("setting credential aws/main in "), "\(refused)")
            #expect(!refused.message.contains(secret))

            // PostgreSQL's text holds no NUL (SQLite's does).
            let nul = try #require(await #expect(throws: StoreError.self) { try await store.addMachine(S.machine("m\u{0}1")) })
            #expect(nul.kind == .invalidArgument && nul.message.contains("22021"), "\(nul)")
            #expect(try await store.latestRevision() == 0, "nothing written")
        }
    }

    static let sqlStates: [(String, StoreError.Kind)] = [
        ("23505", .alreadyExists), ("23503", .failedPrecondition), ("23514", .failedPrecondition), ("23502", .failedPrecondition),
        ("40001", .unavailable), ("40P01", .unavailable), ("57P01", .unavailable), ("57P03", .unavailable), ("53100", .unavailable),
        ("53300", .unavailable), ("08006", .unavailable), ("58030", .unavailable), ("22001", .invalidArgument), ("54000", .invalidArgument),
        ("22021", .invalidArgument), ("28P01", .failedPrecondition), ("42501", .failedPrecondition), ("25006", .failedPrecondition),
        ("3D000", .failedPrecondition), ("42P01", .internal), ("P0001", .internal), ("", .internal),
    ]

    @Test(arguments: sqlStates)
    func eachSQLStateMeansAKind(_ sqlState: String, _ kind: StoreError.Kind) {
        #expect(PostgresMachineStore.kind(sqlState: sqlState) == kind)
    }

    // MARK: Leases

    @Test func aLeaseIsClaimedOnceRenewedReleasedAndLeftByItsHolder() async throws {
        try await MachineStoreFixture.with(.postgres) { fixture in
            let store = try await fixture.openPostgres()
            let (k1, k2) = (CredentialKey(provider: "fake", name: "main"), CredentialKey(provider: "fake", name: "spare"))
            let a1 = try #require(try await store.claimLease(k1, holder: "a", ttl: .seconds(30)))
            let a2 = try #require(try await store.claimLease(k2, holder: "a", ttl: .seconds(30)))
            #expect(a1 == LeaseFence(key: k1, holder: "a", epoch: 1) && a2.epoch == 1)
            #expect(try await store.claimLease(k1, holder: "b", ttl: .seconds(30)) == nil, "held")
            #expect(try await store.claimLease(k1, holder: "a", ttl: .seconds(30)) == nil, "held, by itself too")

            let stale = LeaseFence(key: k1, holder: "a", epoch: 7)
            #expect(try await store.renewLeases([a2, stale, a1], ttl: .seconds(30)) == [a2, a1])
            #expect(try await store.renewLeases([], ttl: .seconds(30)) == [])

            // Released: claimable at once, at the next epoch.
            try await store.releaseLeases([a1])
            let b1 = try #require(try await store.claimLease(k1, holder: "b", ttl: .seconds(30)))
            #expect(b1.epoch == 2)
            #expect(try await store.renewLeases([a1], ttl: .seconds(30)) == [], "another holds it now")
            try await store.releaseLeases([a1])
            #expect(try await store.claimLease(k1, holder: "a", ttl: .seconds(30)) == nil, "a stale release leaves it alone")

            // Leaving releases everything its holder has.
            try await store.leave(holder: "b")
            let a1again = try #require(try await store.claimLease(k1, holder: "a", ttl: .seconds(30)))
            #expect(a1again.epoch == 3)
            let leases = try await store.leases()
            #expect(leases.map(\.fence) == [a1again, a2])
            let now = Self.wallClock()
            #expect(leases.allSatisfy { $0.expiresAt > now && $0.expiresAt < now + .seconds(60) }, "the database's clock, not the store's")
        }
    }

    static func wallClock() -> Timestamp { SystemPollClock().now }

    @Test func aLeaseExpiresByTheDatabaseClock() async throws {
        try await MachineStoreFixture.with(.postgres) { fixture in
            let store = try await fixture.openPostgres()
            let key = CredentialKey(provider: "fake", name: "main")
            // Long enough that the second claim comes before it runs out on
            // a loaded machine.
            let first = try #require(try await store.claimLease(key, holder: "a", ttl: .seconds(5)))
            #expect(try await store.claimLease(key, holder: "b", ttl: .seconds(30)) == nil)
            let expiry = try #require(try await store.leases().first?.expiresAt)
            // The store's own clock stands still: only the database's moves.
            // The database itself waits until its clock passes the expiry.
            _ = try await fixture.column(
                "SELECT pg_sleep_until(to_timestamp(\(expiry.nanosecondsSinceEpoch / 1000 + 1000)::double precision / 1000000))")
            let taken = try #require(try await store.claimLease(key, holder: "b", ttl: .seconds(30)))
            #expect(taken == LeaseFence(key: key, holder: "b", epoch: first.epoch + 1))
            #expect(try await Self.databaseNow(fixture) > expiry)
            #expect(try await store.renewLeases([first], ttl: .seconds(30)) == [], "claimed by another: gone")
        }
    }

    @Test func anExpiredLeaseNobodyClaimedIsStillItsHolders() async throws {
        try await MachineStoreFixture.with(.postgres) { fixture in
            let store = try await fixture.openPostgres()
            try await store.addMachine(S.machine("m1"))
            let key = CredentialKey(provider: "fake", name: "main")
            let fence = try #require(try await store.claimLease(key, holder: "a", ttl: .seconds(1)))
            // The database waits until its own clock passes the expiry.
            _ = try await fixture.column("SELECT pg_sleep_until(expires_at + interval '1 millisecond') FROM leases")
            #expect(try await fixture.column("SELECT expires_at < now() FROM leases") == ["t"])
            // Its epoch is still the newest: writes under it stand.
            #expect(try await store.applyPoll([PollResult(machineID: "m1", instanceStatus: S.running)], schedule: [], fence: fence).count == 1)
            #expect(try await store.renewLeases([fence], ttl: .seconds(30)) == [fence])
            #expect(try await store.claimLease(key, holder: "b", ttl: .seconds(30)) == nil, "renewed")
        }
    }

    @Test func aStaleFenceWritesNothing() async throws {
        try await MachineStoreFixture.with(.postgres) { fixture in
            let store = try await fixture.openPostgres()
            try await store.addMachines([S.machine("m1"), S.machine("m2")])
            let key = CredentialKey(provider: "fake", name: "main")
            let a = try #require(try await store.claimLease(key, holder: "a", ttl: .seconds(30)))
            let t0 = fixture.clock.now
            let entry = ScheduleEntry(machineID: "m1", group: .short, interval: .seconds(3), due: t0)
            #expect(try await store.applyPoll([PollResult(machineID: "m1", instanceStatus: S.running)], schedule: [entry], fence: a).count == 1)

            // Another controller took the pair while a was paused.
            try await store.releaseLeases([a])
            let b = try #require(try await store.claimLease(key, holder: "b", ttl: .seconds(30)))
            let before = try await store.latestRevision()
            let stopped = InstanceStatusRecord(state: .stopped, rawStatus: "stopped")
            let later = ScheduleEntry(machineID: "m2", group: .long, interval: .seconds(900), due: t0 + .seconds(900))
            let lost = await #expect(throws: StoreError.self) {
                try await store.applyPoll([PollResult(machineID: "m1", instanceStatus: stopped, pollError: "x")], schedule: [later], fence: a)
            }
            #expect(lost == StoreError.leaseLost(a))
            #expect(lost?.kind == .leaseLost && lost.map { RPCError(from: $0).code } == .failedPrecondition)
            #expect(try await store.latestRevision() == before)
            #expect(try await store.machine(id: "m1")?.instanceStatus.state == .running)
            #expect(try await store.machine(id: "m1")?.pollError == nil)
            #expect(try await store.schedule() == [entry])
            // Unknown pairs and other holders are refused alike.
            let elsewhere = LeaseFence(key: CredentialKey(provider: "fake", name: "none"), holder: "b", epoch: 2)
            await #expect(throws: StoreError.leaseLost(elsewhere)) { try await store.applyPoll([], schedule: [], fence: elsewhere) }
            await #expect(throws: StoreError.leaseLost(LeaseFence(key: key, holder: "a", epoch: 2))) {
                try await store.applyPoll([], schedule: [], fence: LeaseFence(key: key, holder: "a", epoch: 2))
            }

            #expect(try await store.applyPoll([PollResult(machineID: "m1", instanceStatus: stopped)], schedule: [later], fence: b).count == 1)
            #expect(try await store.schedule() == [entry, later])
        }
    }

    @Test func heartbeatsListTheLiveControllers() async throws {
        try await MachineStoreFixture.with(.postgres) { fixture in
            let store = try await fixture.openPostgres()
            let a = ControllerIdentity(holder: "host-a:10:x", host: "host-a", pid: 10, version: "1.0.0")
            let b = ControllerIdentity(holder: "host-b:20:y", host: "host-b", pid: 20, version: "1.0.0")
            #expect(try await store.heartbeat(a, ttl: .seconds(30)).map(\.identity) == [a])
            let both = try await store.heartbeat(b, ttl: .seconds(30))
            #expect(both.map(\.identity) == [a, b])
            #expect(both.allSatisfy { $0.expiresAt - $0.lastRenewal == .seconds(30) })
            var upgraded = a
            upgraded.version = "1.1.0"
            _ = try await store.heartbeat(upgraded, ttl: .seconds(30))
            #expect(try await store.controllers().map(\.identity) == [upgraded, b])

            // One that stops renewing drops out by the database's clock; one
            // that leaves, at once.
            let c = ControllerIdentity(holder: "host-c:30:z", host: "host-c", pid: 30, version: "1.0.0")
            _ = try await store.heartbeat(c, ttl: .seconds(1))
            _ = try await store.claimLease(CredentialKey(provider: "fake", name: "main"), holder: b.holder, ttl: .seconds(30))
            try await store.leave(holder: b.holder)
            let alive = upgraded
            // The database waits until its own clock passes c's expiry.
            _ = try await fixture.column(
                "SELECT pg_sleep_until(expires_at + interval '1 millisecond') FROM controllers WHERE holder = '\(c.holder)'")
            #expect(try await store.controllers().map(\.identity) == [alive])
            #expect(try await store.claimLease(CredentialKey(provider: "fake", name: "main"), holder: a.holder, ttl: .seconds(30))?.epoch == 2)
            await #expect(throws: StoreError.self) { try await store.heartbeat(a, ttl: .zero) }
            await #expect(throws: StoreError.self) { try await store.claimLease(CredentialKey(provider: "x", name: "y"), holder: "a", ttl: .seconds(-1)) }
        }
    }

    // MARK: Notifications

    @Test func anotherStoresChangesReachTheChangeHandler() async throws {
        try await MachineStoreFixture.with(.postgres) { fixture in
            let writer = try await fixture.openPostgres()
            let listener = try await fixture.openPostgres()
            let heard = TestEvent<Void>()
            listener.setChangeHandler { heard.signal() }
            await listener.untilListening()
            try await writer.addMachine(S.machine("m1"))
            try await heard.wait(.seconds(10), "the listener to hear of the writer's change")
            try await writer.applyPoll([PollResult(machineID: "m1", instanceStatus: S.running)], schedule: [])
            try await heard.wait(.seconds(10), "the listener to hear of the poll")
            #expect(try await listener.events(after: 0, limit: 10).count == 2)
        }
    }

    @Test func aRestartedDatabaseIsListenedToAgain() async throws {
        try await Self.withDedicatedCluster { cluster, fixture in
            let writer = try await fixture.openPostgres()
            let listenerLogs = LogCapture()
            let listener = try await fixture.openPostgres(logs: listenerLogs)
            let heard = TestEvent<Void>()
            listener.setChangeHandler { heard.signal() }
            await listener.untilListening()
            try await writer.addMachine(S.machine("m1"))
            try await heard.wait(.seconds(10), "the listener to hear of the first change")

            try await cluster.restart()
            // Listening again, it says a change may have been missed.
            try await heard.wait(.seconds(30), "the listener to listen again")
            try await Self.retryingWhileUnavailable(writer) { try await writer.addMachine(S.machine("m2")) }
            try await heard.wait(.seconds(10), "the listener to hear of a change after the restart")
            #expect(try await listener.machines().map(\.id) == ["m1", "m2"])
            #expect(listenerLogs.all.contains { $0.level == .info && $0.message.contains("reachable again") })
        }
    }

    @Test func whileTheDatabaseIsDownOperationsAreUnavailableAndThenRecover() async throws {
        try await Self.withDedicatedCluster { cluster, fixture in
            let store = try await fixture.openPostgres(connectionWait: .seconds(1))
            // A first connection on a loaded machine may take longer than
            // the one-second wait this test gives an operation.
            await store.untilListening()
            try await Self.retryingWhileUnavailable(store) { try await store.addMachine(S.machine("m1")) }
            try await cluster.halt()
            // Every operation fails as unavailable. The first ones may get a
            // pooled connection the halt closed, which the pool has not yet
            // seen close ("the connection was closed"); once the pool has
            // dropped them, the store says it cannot reach PostgreSQL.
            var down: StoreError?
            for _ in 0..<10 {
                let failure = try #require(await #expect(throws: StoreError.self) { try await store.addMachine(S.machine("m2")) })
                #expect(failure.kind == .unavailable, "\(failure)")
                #expect(!failure.message.contains(cluster.password))
                down = failure
                if failure.message.contains("cannot reach PostgreSQL") { break }
            }
            #expect(down?.message.hasPrefix("adding machine m2 in \(store.location): cannot reach PostgreSQL: ") == true, "\(String(describing: down))")
            try await cluster.resume()
            await store.untilListening()
            try await Self.retryingWhileUnavailable(store) { try await store.addMachine(S.machine("m2")) }
            #expect(try await store.machines().map(\.id) == ["m1", "m2"])
            #expect(try await store.latestRevision() == 2)
        }
    }

    /// Runs `operation` on `store` once the server is reachable again (its
    /// LISTEN connection is back up), again while it fails as unavailable:
    /// each failure is a pooled connection the restart closed, which the
    /// pool then drops, or a wait for a new connection that timed out. No
    /// pause between tries: each one waits on the pool itself. At most 10
    /// tries within 30 s.
    static func retryingWhileUnavailable(
        _ store: PostgresMachineStore, _ operation: @escaping @Sendable () async throws -> Void
    ) async throws {
        try await withTimeout(.seconds(30), "the store to be available again") {
            for attempt in 1...10 {
                await store.untilListening()
                do {
                    try await operation()
                    return
                } catch let error as StoreError where error.kind == .unavailable && attempt < 10 {
                    continue
                }
            }
        }
    }

    // MARK: Speed

    /// A sweep's batch, whole: its speed is the benchmark's to measure
    /// (scripts/bench), not a timed test's.
    @Test func aBatchOfAThousandIsWrittenWhole() async throws {
        try await MachineStoreFixture.with(.postgres) { fixture in
            let store = try await fixture.openPostgres()
            let ids = (0..<1000).map { String(format: "m-%04d", $0) }
            try await store.addMachines(ids.map { S.machine($0) })
            let now = fixture.clock.now
            let results = ids.map { PollResult(machineID: $0, instanceStatus: S.running, interfaces: S.interfaces) }
            let schedule = ids.map { ScheduleEntry(machineID: $0, group: .long, interval: .seconds(900), due: now + .seconds(900)) }
            let events = try await store.applyPoll(results, schedule: schedule)
            #expect(events.count == 2000)
            #expect(try await store.machines().allSatisfy { $0.interfaces == S.interfaces && $0.instanceStatus.state == .running })
            #expect(try await store.schedule().count == 1000)
        }
    }
}

/// The `store: postgres://…` URL and where its password comes from.
@Suite("PostgreSQL store location")
struct PostgresLocationTests {
    @Test func aFullURLIsReadAndShownWithoutAPassword() throws {
        let location = try PostgresLocation.parse("postgres://ip@db.example:6543/fleet?sslmode=require")
        #expect(location == PostgresLocation(host: "db.example", port: 6543, user: "ip", database: "fleet", tls: .require))
        #expect(location.description == "postgres://ip@db.example:6543/fleet?sslmode=require")
        #expect(try PostgresLocation.parse(location.description) == location)
        let defaults = try PostgresLocation.parse("postgresql://ip@db/fleet")
        #expect(defaults.port == 5432 && defaults.tls == .prefer && defaults.socketDirectory == nil)
        let socket = try PostgresLocation.parse("postgres://ip@/fleet?host=/run/postgresql&sslmode=disable")
        #expect(socket.host == "localhost" && socket.socketDirectory == "/run/postgresql" && socket.tls == .disable)
        #expect(socket.description == "postgres://ip@localhost:5432/fleet?sslmode=disable&host=/run/postgresql")
        #expect(PostgresLocation.isURL("postgres://x") && PostgresLocation.isURL("postgresql://x") && !PostgresLocation.isURL("/var/lib/x.db"))
    }

    static let mistakes: [(String, String)] = [
        ("postgres://ip:hunter2secret@db/fleet", "the store URL holds a password"),
        ("postgres://db/fleet", "the store URL names no user"),
        ("postgres://ip@db/", "the store URL names no database"),
        ("postgres://ip@db/a/b", "the store URL names no database"),
        ("postgres://ip@db/fleet?sslmode=verify-full", "sslmode \"verify-full\" is not one of disable, prefer, require"),
        ("postgres://ip@db/fleet?user=x", "unknown store URL parameter \"user\""),
        ("postgres://ip@db/fleet?host=relative", "host= in the query must be an absolute socket directory"),
        ("postgres://ip@/fleet", "the store URL names no host"),
        ("postgres://ip@db:0/fleet", "port 0 is out of range"),
        ("mysql://ip@db/fleet", "expected postgres://"),
    ]

    @Test(arguments: mistakes)
    func aWrongURLSaysWhatIsWrong(_ url: String, _ problem: String) {
        let error = #expect(throws: ConfigProblem.self) { try PostgresLocation.parse(url) }
        #expect(error?.description.hasPrefix(problem) == true, "\(String(describing: error))")
        #expect(error?.description.contains("hunter2secret") == false)
    }

    /// A file of `text` with `mode` in `directory`.
    static func file(_ directory: TemporaryDirectory, _ name: String, _ text: String, mode: mode_t = 0o600) throws -> String {
        let path = directory.file(name)
        try #require(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        try #require(chmod(path, mode) == 0)
        return path
    }

    @Test func thePasswordComesFromTheFileThenPGPASSWORDThenThePassFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let location = PostgresLocation(host: "db.example", port: 6543, user: "ip", database: "fleet")
        let file = try Self.file(directory, "password", "from-file\nsecond line ignored\n")
        #expect(try location.password(passwordFile: file, environment: ["PGPASSWORD": "from-env"]) == "from-file")
        #expect(try location.password(passwordFile: nil, environment: ["PGPASSWORD": "from-env"]) == "from-env")

        let passFile = try Self.file(directory, "pgpass", """
            # host:port:database:user:password
            other.example:6543:fleet:ip:not-this
            db.example:6543:fleet:someone:not-this-either
            db.example:6543:fleet:ip:p\\:ss\\\\word
            *:*:*:*:too-late

            """)
        #expect(try location.password(passwordFile: nil, environment: ["PGPASSFILE": passFile]) == "p:ss\\word")
        let wildcard = try Self.file(directory, "wildcard", "*:*:fleet:*:any-host\n")
        #expect(try location.password(passwordFile: nil, environment: ["PGPASSFILE": wildcard]) == "any-host")
        // ~/.pgpass when PGPASSFILE is not set; a socket matches as localhost.
        _ = try Self.file(directory, ".pgpass", "localhost:6543:fleet:ip:over-socket\n")
        var socket = location
        socket.socketDirectory = "/run/postgresql"
        #expect(try socket.password(passwordFile: nil, environment: ["HOME": directory.path]) == "over-socket")
        #expect(try location.password(passwordFile: nil, environment: ["HOME": directory.path]) == nil, "no line for this host")
        #expect(try location.password(passwordFile: nil, environment: [:]) == nil)
    }

    @Test func aPasswordFileOthersCanReadOrAnEmptyOneIsRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let location = PostgresLocation(host: "db.example", user: "ip", database: "fleet")
        let open = try Self.file(directory, "open", "hunter2secret\n", mode: 0o644)
        let refused = #expect(throws: ConfigProblem.self) { try location.password(passwordFile: open, environment: [:]) }
        #expect(refused?.description.hasPrefix("store_password_file: ") == true, "\(String(describing: refused))")
        #expect(refused?.description.contains("hunter2secret") == false)
        let empty = try Self.file(directory, "empty", "\n")
        #expect(throws: ConfigProblem.self) { try location.password(passwordFile: empty, environment: [:]) }
        let openPassFile = try Self.file(directory, "pgpass", "*:*:*:*:hunter2secret\n", mode: 0o644)
        let passFile = #expect(throws: ConfigProblem.self) { try location.password(passwordFile: nil, environment: ["PGPASSFILE": openPassFile]) }
        #expect(passFile?.description.contains("hunter2secret") == false)
    }
}
