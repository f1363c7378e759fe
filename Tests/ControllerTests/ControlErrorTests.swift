import Core
import ControlAPI
import Foundation
import Logging
import SwiftProtobuf
import Testing
import TestSupport

@_spi(Testing) @testable import Controller

/// The control service's answers when the store or a shim says no, over a
/// real RPC server: the code and message come from the store's own errors
/// (NotFound, AlreadyExists, Unavailable) and the supervisor's, not from a
/// look-up made first to pick one.
@Suite struct ControlErrorTests {
    /// A control service on a private socket, over a store file, with
    /// provider "cloud" configured; its shim never starts (the supervisor's
    /// clock is manual, so it is not restarted either): it is Unavailable.
    final class Served: Sendable {
        let directory: TemporaryDirectory
        let clock = ManualPollClock()
        let store: SQLiteMachineStore
        let fleet: ProviderFleet
        let server: RPCServer
        let client: RPCClient

        init() async throws {
            directory = try TemporaryDirectory()
            let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
            store = try SQLiteMachineStore(
                path: directory.file("machines.db"), busyTimeout: .milliseconds(50), clock: clock, logger: logger)
            fleet = ProviderFleet(
                providers: [], runtimeDirectory: directory.path, clock: clock, settings: SupervisionSettings(), credentials: nil, logger: logger)
            _ = await fleet.apply([
                ProviderConfig(
                    name: "cloud", shim: ShimCommand(executable: "/bin/sh", arguments: ["-c", "exit 3"]), cloud: .with { $0.type = "fake" })
            ])
            let service = ControlService(
                identity: .init(pid: 1, version: "test", startedAt: clock.now, storePath: store.path, runtimeDirectory: directory.path),
                store: store, fleet: fleet, clock: clock, environment: [:], logger: logger)
            var registry = RPCServiceRegistry()
            service.register(into: &registry)
            server = try await RPCServer.bind(unixSocketPath: directory.file("control.sock"), registry: registry, logger: logger)
            client = try await RPCClient.connect(unixSocketPath: directory.file("control.sock"), logger: logger)
        }

        func close() async {
            await client.close()
            await server.close()
            _ = await fleet.apply([])
            try? store.close()
            directory.remove()
        }

        /// The status a call failed with (nil if it succeeded).
        func failure<Request, Response>(_ method: MethodDescriptor<Request, Response>, _ request: Request) async -> RPCError? {
            await rpcError { _ = try await client.call(method, request, timeout: .seconds(30)) }
        }
    }

    static func with(_ body: (Served) async throws -> Void) async throws {
        let served = try await Served()
        do {
            try await served.server.serving { try await body(served) }
        } catch {
            await served.close()
            throw error
        }
        await served.close()
    }

    @Test func aMissingMachineIsNotFoundAsTheStoreSaysIt() async throws {
        try await Self.with { s in
            let missing = RPCError(.notFound, "no machine \"ghost\"")
            #expect(await s.failure(ControlV1.removeMachine, .with { $0.id = "ghost" }) == missing)
            #expect(await s.failure(ControlV1.setAgentStatus, .with { $0.id = "ghost"; $0.agentStatus = "started" }) == missing)
            #expect(await s.failure(ControlV1.getMachine, .with { $0.id = "ghost" }) == missing)
            // Naming no machine is still the request's mistake.
            #expect(await s.failure(ControlV1.removeMachine, .init()) == RPCError(.invalidArgument, "id: a machine id is needed"))
            let revision = try await s.store.latestRevision()
            #expect(revision == 0, "nothing was written")
        }
    }

    @Test func aTakenIDIsAlreadyExistsAsTheStoreSaysIt() async throws {
        try await Self.with { s in
            try await s.store.setCredential(StoredCredential(provider: "cloud", name: "main", authType: "token", attributes: ["token": "t"]))
            let add = Instancepoller_Control_V1_AddMachineRequest.with {
                $0.id = "m1"
                $0.provider = "cloud"
                $0.credential = "main"
            }
            #expect(await s.failure(ControlV1.addMachine, add) == nil)
            let revision = try await s.store.latestRevision()
            #expect(await s.failure(ControlV1.addMachine, add) == RPCError(.alreadyExists, "machine \"m1\" already exists"))
            #expect(try await s.store.latestRevision() == revision, "nothing was written")
        }
    }

    @Test func aMissingCredentialIsNotFoundAsTheStoreSaysIt() async throws {
        try await Self.with { s in
            let missing = RPCError(.notFound, "no credential cloud/nope")
            #expect(await s.failure(ControlV1.removeCredential, .with { $0.provider = "cloud"; $0.name = "nope" }) == missing)
            #expect(await s.failure(ControlV1.removeCredential, .with { $0.provider = "cloud"; $0.name = "nope"; $0.force = true }) == missing)
            #expect(await s.failure(ControlV1.validateCredential, .with { $0.provider = "cloud"; $0.name = "nope" }) == missing)
            // Machines that still name it do not make it there.
            try await s.store.addMachine(Machine(id: "m1", provider: "cloud", credential: "nope"))
            #expect(await s.failure(ControlV1.removeCredential, .with { $0.provider = "cloud"; $0.name = "nope" }) == missing)
        }
    }

    @Test func aCredentialInUseIsStillRefusedByTheRule() async throws {
        try await Self.with { s in
            try await s.store.setCredential(StoredCredential(provider: "cloud", name: "main", authType: "token", attributes: ["token": "t"]))
            try await s.store.addMachine(Machine(id: "m1", provider: "cloud", credential: "main"))
            #expect(await s.failure(ControlV1.removeCredential, .with { $0.provider = "cloud"; $0.name = "main" }) == RPCError(
                .failedPrecondition, "credential cloud/main is used by 1 machine; remove it first or pass --force"))
            #expect(try await s.store.credential(provider: "cloud", name: "main") != nil)
        }
    }

    @Test func aShimThatIsDownIsUnavailable() async throws {
        try await Self.with { s in
            try await s.store.setCredential(StoredCredential(provider: "cloud", name: "main", authType: "token", attributes: ["token": "t"]))
            let failure = try #require(await s.failure(ControlV1.validateCredential, .with { $0.provider = "cloud"; $0.name = "main" }))
            #expect(failure.code == .unavailable && failure.code.isRetryable)
            #expect(failure.message.hasPrefix("provider cloud: "), "\(failure)")
        }
    }

    @Test func aStoreBusyPastItsTimeoutIsUnavailable() async throws {
        try await Self.with { s in
            try await s.store.addMachine(Machine(id: "m1", provider: "cloud", credential: "main"))
            let lock = try await HeldWriteLock(path: s.store.path)
            let failure = try #require(await s.failure(ControlV1.removeMachine, .with { $0.id = "m1" }))
            try await lock.release()
            #expect(failure.code == .unavailable, "\(failure)")
            #expect(failure.message.hasPrefix("removing machine m1 in \(s.store.path): "), "\(failure)")
            #expect(await s.failure(ControlV1.removeMachine, .with { $0.id = "m1" }) == nil, "tried again once the lock is free, it passes")
        }
    }
}
