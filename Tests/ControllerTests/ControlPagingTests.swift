import Core
import Support
import Foundation
import Logging
import NIOCore
import SwiftProtobuf
import Testing
import ControlAPI

@_spi(Testing) @testable import Controller

/// The control service's listings a page at a time: paging boundaries, the
/// byte cut that keeps every answer under the frame limit, filters, tokens,
/// and status counts. The service is driven through its registered
/// handlers, as the RPC server calls them, over an in-memory store.
@Suite struct ControlPagingTests {
    let clock = ManualPollClock()
    let store: SQLiteMachineStore
    /// The service as the controller runs it.
    let registry: RPCServiceRegistry
    /// The same over the same store with answers of at most 64 KiB, so
    /// that the byte cut shows on a few hundred KiB (strings decode slowly
    /// in a debug build, and this process's few threads serve other tests
    /// too). The frame limit itself is proven with the real binaries
    /// (FleetCLITests).
    let smallAnswers: RPCServiceRegistry
    static let smallBudget = 64 << 10

    init() throws {
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let clock = self.clock
        let store = try SQLiteMachineStore.inMemory(clock: clock, logger: logger)
        self.store = store
        let fleet = ProviderFleet(
            providers: [], runtimeDirectory: "/nonexistent", clock: clock, settings: SupervisionSettings(), credentials: nil, logger: logger)
        let served = { (budget: Int) -> RPCServiceRegistry in
            let service = ControlService(
                identity: .init(pid: 1, version: "test", startedAt: clock.now, storePath: ":memory:", runtimeDirectory: "/nonexistent"),
                store: store, fleet: fleet, clock: clock, environment: [:], answerBudget: budget, logger: logger)
            var registry = RPCServiceRegistry()
            service.register(into: &registry)
            return registry
        }
        registry = served(ControlService.defaultAnswerBudget)
        smallAnswers = served(Self.smallBudget)
    }

    /// Calls `method` as the server would; returns the answer and its size.
    func call<Request, Response>(
        _ method: MethodDescriptor<Request, Response>, _ request: Request, smallAnswers small: Bool = false
    ) async throws -> (Response, Int) {
        let handler = try (small ? smallAnswers : registry).handler(service: method.service, method: method.method).get()
        let context = RPCServerContext(service: method.service, method: method.method)
        let answer = try await handler(ByteBuffer(bytes: try request.serializedBytes() as [UInt8]), context)
        let size = answer.payload.readableBytes
        return (try Response(serializedBytes: Array(answer.payload.readableBytesView)), size)
    }

    func list(_ request: Instancepoller_Control_V1_ListMachinesRequest) async throws -> Instancepoller_Control_V1_ListMachinesResponse {
        try await call(ControlV1.listMachines, request).0
    }

    /// Every page of a listing: the ids of each page.
    func pages(_ request: Instancepoller_Control_V1_ListMachinesRequest) async throws -> [[String]] {
        var request = request
        var pages: [[String]] = []
        repeat {
            let page = try await list(request)
            pages.append(page.machines.map(\.id))
            request.pageToken = page.nextPageToken
            #expect(pages.count <= 1000, "the listing ends")
        } while !request.pageToken.isEmpty && pages.count <= 1000
        return pages
    }

    func addMachines(_ count: Int, interfaces: Int = 0, padding: Int = 0) async throws {
        try await store.addMachines((0..<count).map { index in
            Machine(
                id: "m-\(String(format: "%05d", index))", provider: "cloud", credential: "main", instanceID: "i-\(index)",
                interfaces: (0..<interfaces).map { Self.interface($0, machine: index, padding: padding, addresses: 1) })
        })
    }

    /// An interface with a few addresses, about 300 bytes on the wire and
    /// `padding` more in its provider id (bytes are cheap to move, fields
    /// are not).
    static func interface(_ index: Int, machine: Int, padding: Int = 0, addresses: Int = 4) -> ProviderV1.NetworkInterface {
        .with {
            $0.deviceIndex = Int32(index)
            $0.interfaceName = "eth\(index)"
            $0.macAddress = String(format: "02:00:%02x:%02x:%02x:%02x", index, machine & 0xff, (machine >> 8) & 0xff, (machine >> 16) & 0xff)
            $0.providerID = "eni-\(machine)-\(index)-0123456789abcdef" + String(repeating: "x", count: padding)
            $0.providerSubnetID = "subnet-0123456789abcdef\(index)"
            $0.providerNetworkID = "vpc-0123456789abcdef"
            $0.addresses = (0..<addresses).map { address in
                .with {
                    $0.value = "10.\(index).\(machine % 250).\(address + 1)"
                    $0.cidr = "10.\(index).0.0/16"
                    $0.scope = .cloudLocal
                }
            }
            $0.shadowAddresses = [.with {
                $0.value = "203.0.113.\(machine % 250)"
                $0.scope = .public
            }]
        }
    }

    func expectInvalidArgument(_ body: () async throws -> Void, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) async {
        do {
            try await body()
            Issue.record("expected InvalidArgument", sourceLocation: sourceLocation)
        } catch {
            let rpc = RPCError(from: error)
            #expect(rpc.code == .invalidArgument, sourceLocation: sourceLocation)
            #expect(rpc.message.contains(text), "\(rpc.message)", sourceLocation: sourceLocation)
        }
    }

    // MARK: - Boundaries

    @Test func anEmptyStoreIsOneEmptyPage() async throws {
        let page = try await list(.init())
        #expect(page.machines.isEmpty)
        #expect(page.nextPageToken.isEmpty)
    }

    @Test func anExactPageEndsWithoutAnEmptyOne() async throws {
        try await addMachines(6)
        #expect(try await pages(.with { $0.pageSize = 3 }) == [["m-00000", "m-00001", "m-00002"], ["m-00003", "m-00004", "m-00005"]])
        #expect(try await pages(.with { $0.pageSize = 6 }).count == 1)
        let uneven = try await pages(.with { $0.pageSize = 4 })
        #expect(uneven.map(\.count) == [4, 2])
    }

    @Test func aPageSizeOverTheMaximumIsCapped() async throws {
        try await addMachines(3)
        let page = try await list(.with { $0.pageSize = 4_000_000_000 })
        #expect(page.machines.count == 3)
        #expect(page.nextPageToken.isEmpty)
    }

    @Test func machinesAddedOrRemovedBetweenPagesAreNeverSeenTwice() async throws {
        try await addMachines(6)
        let first = try await list(.with { $0.pageSize = 3 })
        #expect(first.machines.map(\.id) == ["m-00000", "m-00001", "m-00002"])
        // The page's last machine, the next one, and one beyond go; one
        // before the cursor and one after it come.
        try await store.removeMachines(ids: ["m-00002", "m-00003"])
        try await store.addMachines([
            Machine(id: "m-00000a", provider: "cloud", credential: "main"), Machine(id: "m-00009", provider: "cloud", credential: "main"),
        ])
        var rest: [String] = []
        var token = first.nextPageToken
        while !token.isEmpty {
            let page = try await list(.with {
                $0.pageSize = 3
                $0.pageToken = token
            })
            rest += page.machines.map(\.id)
            token = page.nextPageToken
        }
        #expect(rest == ["m-00004", "m-00005", "m-00009"])
    }

    // MARK: - The byte cut

    @Test func pagesAreCutByBytesSoNoAnswerExceedsItsBudget() async throws {
        // 120 machines with 8 interfaces of about 700 bytes: about 650 KiB,
        // ten answers of 64 KiB.
        try await addMachines(120, interfaces: 8, padding: 400)
        var request = Instancepoller_Control_V1_ListMachinesRequest.with { $0.pageSize = 10_000 }
        var seen: [String] = []
        var sizes: [Int] = []
        repeat {
            let (page, size) = try await call(ControlV1.listMachines, request, smallAnswers: true)
            sizes.append(size)
            seen += page.machines.map(\.id)
            #expect(page.machines.allSatisfy { $0.interfaces.count == 8 && !$0.interfacesOmitted })
            request.pageToken = page.nextPageToken
        } while !request.pageToken.isEmpty && sizes.count < 100
        #expect(sizes.count >= 8, "cut by bytes, not by the page size: \(sizes)")
        // The answer's items fit the budget; the token is the rest.
        #expect(sizes.allSatisfy { $0 <= Self.smallBudget + 100 }, "\(sizes)")
        #expect(sizes.dropLast().allSatisfy { $0 > Self.smallBudget - 8 << 10 }, "pages are filled: \(sizes)")
        #expect(seen == (0..<120).map { "m-" + String(format: "%05d", $0) })
    }

    @Test func aMachineTooLargeForAnyAnswerComesWithoutItsInterfaces() async throws {
        // 8 interfaces of about 10 KiB: 80 KiB for one machine, more than
        // an answer holds.
        try await store.addMachines([
            Machine(id: "huge", provider: "cloud", credential: "main", interfaces: (0..<8).map { Self.interface($0, machine: 1, padding: 10 << 10) }),
            Machine(id: "small", provider: "cloud", credential: "main", interfaces: [Self.interface(0, machine: 2)]),
        ])
        var (page, size) = try await call(ControlV1.listMachines, .init(), smallAnswers: true)
        #expect(size <= Self.smallBudget + 100)
        #expect(page.machines.map(\.id) == ["huge", "small"])
        #expect(page.machines[0].interfacesOmitted && page.machines[0].interfaces.isEmpty)
        #expect(!page.machines[1].interfacesOmitted && page.machines[1].interfaces.count == 1)
        let shown = try await call(ControlV1.getMachine, .with { $0.id = "huge" }, smallAnswers: true).0
        #expect(shown.machine.interfacesOmitted && shown.machine.id == "huge")
        // With room for it, it comes whole.
        (page, size) = try await call(ControlV1.listMachines, .init())
        #expect(page.machines.map(\.interfaces.count) == [8, 1] && !page.machines[0].interfacesOmitted)
    }

    // MARK: - Filters

    @Test func everyFilterIsAppliedByTheController() async throws {
        try await store.addMachines([
            Machine(id: "a", provider: "aws", credential: "prod", instanceID: "i-a", agentStatus: .started),
            Machine(id: "b", provider: "aws", credential: "dev", instanceID: "i-b"),
            Machine(id: "c", provider: "gce", credential: "prod", instanceID: "i-c", agentStatus: .error),
            Machine(id: "d", provider: "gce", credential: "prod", instanceID: "i-d"),
            Machine(id: "e", provider: "aws", credential: "prod", manual: true),
        ])
        let now = clock.now
        try await store.applyPoll([
            PollResult(machineID: "a", instanceStatus: InstanceStatusRecord(state: .running, rawStatus: "running", updatedAt: now)),
            PollResult(machineID: "b", instanceStatus: .notFound(at: now)),
            PollResult(machineID: "c", instanceStatus: InstanceStatusRecord(state: .unknown, rawStatus: "weird", updatedAt: now), pollError: "timeout"),
            PollResult(machineID: "d", instanceStatus: InstanceStatusRecord(state: .stopped, rawStatus: "stopped", updatedAt: now)),
        ], schedule: [
            ScheduleEntry(machineID: "a", group: .long, interval: .seconds(900), due: now),
            ScheduleEntry(machineID: "b", group: .short, interval: .seconds(3), due: now),
            ScheduleEntry(machineID: "c", group: .short, interval: .seconds(6), due: now),
            ScheduleEntry(machineID: "d", group: .long, interval: .seconds(900), due: now),
        ])
        func ids(_ configure: (inout Instancepoller_Control_V1_ListMachinesRequest) -> Void) async throws -> [String] {
            var request = Instancepoller_Control_V1_ListMachinesRequest()
            configure(&request)
            return try await pages(request).flatMap { $0 }
        }
        #expect(try await ids { $0.provider = "aws" } == ["a", "b", "e"])
        #expect(try await ids { $0.credential = "prod" } == ["a", "c", "d", "e"])
        #expect(try await ids { $0.provider = "aws"; $0.credential = "prod" } == ["a", "e"])
        #expect(try await ids { $0.state = "running" } == ["a"])
        #expect(try await ids { $0.state = "not-found" } == ["b"])
        #expect(try await ids { $0.state = "unknown" } == ["b", "c"], "not-found is an unknown state, as status counts it")
        #expect(try await ids { $0.state = "stopped" } == ["d"])
        #expect(try await ids { $0.group = "short" } == ["b", "c"])
        #expect(try await ids { $0.group = "long" } == ["a", "d"])
        #expect(try await ids { $0.group = "none" } == ["e"])
        #expect(try await ids { $0.agentStatus = "started" } == ["a"])
        #expect(try await ids { $0.agentStatus = "none" } == ["b", "d", "e"])
        #expect(try await ids { $0.withError = true } == ["c"])
        #expect(try await ids { $0.withError = true; $0.provider = "aws" } == [])
        // Filters hold across pages too.
        #expect(try await pages(.with { $0.credential = "prod"; $0.pageSize = 1 }) == [["a"], ["c"], ["d"], ["e"]])

        let idsOnly = try await list(.with { $0.idsOnly = true; $0.provider = "gce" })
        #expect(idsOnly.machines.map(\.id) == ["c", "d"])
        #expect(idsOnly.machines.allSatisfy { machine in machine == ControlV1.Machine.with { $0.id = machine.id } }, "ids only: nothing else is filled")

        let full = try await list(.with { $0.state = "running" }).machines[0]
        #expect(full.group == "long" && full.intervalNano == Duration.seconds(900).totalNanoseconds && full.instanceID == "i-a")

        await expectInvalidArgument({ _ = try await list(.with { $0.state = "runing" }) }, "state: unknown state \"runing\" (expected one of: allocating")
        await expectInvalidArgument({ _ = try await list(.with { $0.group = "medium" }) }, "group: unknown poll group \"medium\" (expected short, long or none)")
        await expectInvalidArgument({ _ = try await list(.with { $0.agentStatus = "sleepy" }) }, "agent_status: unknown agent status \"sleepy\"")
    }

    // MARK: - Tokens

    @Test func aTokenOnlyWorksForTheListingItWasIssuedFor() async throws {
        try await addMachines(5)
        let token = try await list(.with { $0.pageSize = 2 }).nextPageToken
        #expect(!token.isEmpty)
        // The same filters (another page size is fine).
        #expect(try await list(.with { $0.pageSize = 10; $0.pageToken = token }).machines.map(\.id) == ["m-00002", "m-00003", "m-00004"])
        // Other filters, ids only, or the events log: refused.
        await expectInvalidArgument({ _ = try await list(.with { $0.provider = "cloud"; $0.pageToken = token }) }, "page_token: not a token this controller issued")
        await expectInvalidArgument({ _ = try await list(.with { $0.idsOnly = true; $0.pageToken = token }) }, "page_token:")
        await expectInvalidArgument({ _ = try await call(ControlV1.events, .with { $0.pageToken = token }) }, "page_token:")
        // Forged: changed, cut, lengthened, garbage, a cursor of one's own.
        var changed = Array(token.utf8)
        changed[2] = changed[2] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        let cursorOnly = Data([1] + Array("m-00003".utf8) + [UInt8](repeating: 0, count: 16)).base64EncodedString()
        for forged in [String(decoding: changed, as: UTF8.self), String(token.dropLast(3)), token + "AAAA", "not a token", "====", "", cursorOnly,
                       String(repeating: "A", count: 100_000)] where !forged.isEmpty {
            await expectInvalidArgument({ _ = try await list(.with { $0.pageToken = forged }) }, "page_token:")
        }
    }

    // MARK: - Events

    @Test func eventsArePagedByCountAndBytes() async throws {
        try await addMachines(2500)
        var request = Instancepoller_Control_V1_EventsRequest()
        var revisions: [Int64] = []
        var pages = 0
        repeat {
            let (page, _) = try await call(ControlV1.events, request)
            revisions += page.events.map(\.revision)
            #expect(page.latestRevision == 2500)
            request.pageToken = page.nextPageToken
            pages += 1
        } while !request.pageToken.isEmpty && pages < 10
        #expect(pages == 3)
        #expect(revisions == Array(1...2500))
        // page_size, and the old after_revision and limit still work.
        let small = try await call(ControlV1.events, .with { $0.pageSize = 10; $0.afterRevision = 5 }).0
        #expect(small.events.map(\.revision) == Array(6...15) && !small.nextPageToken.isEmpty)
        let old = try await call(ControlV1.events, .with { $0.limit = 7; $0.afterRevision = 2490 }).0
        #expect(old.events.map(\.revision) == Array(2491...2497))
        let last = try await call(ControlV1.events, .with { $0.afterRevision = 2495 }).0
        #expect(last.events.count == 5 && last.nextPageToken.isEmpty)
    }

    @Test func eventsWithLargeValuesAreCutByBytes() async throws {
        // Poll errors of 1 KiB appear on 200 machines: events whose values
        // add up to about 200 KiB, three answers of 64 KiB at least.
        try await addMachines(200)
        let first = try await store.latestRevision()
        try await store.applyPoll((0..<200).map { index in
            PollResult(machineID: "m-" + String(format: "%05d", index), pollError: "\(index): " + String(repeating: "e", count: 1 << 10))
        }, schedule: [])
        var request = Instancepoller_Control_V1_EventsRequest.with { $0.afterRevision = first }
        var count = 0
        var sizes: [Int] = []
        repeat {
            let (page, size) = try await call(ControlV1.events, request, smallAnswers: true)
            count += page.events.count
            #expect(page.events.allSatisfy { $0.newValue.utf8.count > 1 << 10 }, "values are whole")
            sizes.append(size)
            request.pageToken = page.nextPageToken
        } while !request.pageToken.isEmpty && sizes.count < 100
        #expect(count == 200)
        #expect(sizes.count >= 3, "cut by bytes: \(sizes)")
        #expect(sizes.allSatisfy { $0 <= Self.smallBudget + 100 }, "\(sizes)")
    }

    // MARK: - Status

    @Test func statusCountsPollErrorsOverdueAndNotFound() async throws {
        try await addMachines(4)
        let now = clock.now
        try await store.applyPoll([
            PollResult(machineID: "m-00000", instanceStatus: .notFound(at: now)),
            PollResult(machineID: "m-00001", pollError: "throttled"),
            PollResult(machineID: "m-00002", instanceStatus: InstanceStatusRecord(state: .running, rawStatus: "running", updatedAt: now)),
        ], schedule: [
            // Due 5 s ago with a 3 s interval: overdue.
            ScheduleEntry(machineID: "m-00000", group: .short, interval: .seconds(3), due: Timestamp(nanosecondsSinceEpoch: now.nanosecondsSinceEpoch - 5_000_000_000)),
            // Due 2 s ago with a 3 s interval: late, not overdue.
            ScheduleEntry(machineID: "m-00001", group: .short, interval: .seconds(3), due: Timestamp(nanosecondsSinceEpoch: now.nanosecondsSinceEpoch - 2_000_000_000)),
            ScheduleEntry(machineID: "m-00002", group: .long, interval: .seconds(900), due: now + .seconds(900)),
        ])
        var status = try await call(ControlV1.status, .init()).0
        #expect(status.machines == 4)
        #expect(status.pollErrors == 1)
        #expect(status.overdue == 1)
        #expect(status.notFound == 1)
        #expect(status.shortGroup == 2 && status.longGroup == 1)
        #expect(status.machinesByState == ["unknown": 1, "running": 1, "unspecified": 2])
        clock.advance(by: .seconds(2000))
        status = try await call(ControlV1.status, .init()).0
        #expect(status.overdue == 3)
    }
}
