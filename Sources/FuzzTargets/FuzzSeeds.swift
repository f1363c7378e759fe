internal import Core
internal import NIOCore
internal import SwiftProtobuf
internal import ControlAPI

/// The binary seeds of the committed corpus (`Fuzz/corpus`), written by
/// `instancepoller-fuzz seeds DIR`: well-formed calls of every provider
/// method, and the malformed shapes the wire protocol names. The document
/// targets' seeds are the repository's own YAML files, copied.
public enum FuzzSeeds {
    public static func binary() -> [(target: FuzzTarget, name: String, bytes: [UInt8])] {
        let calls = providerCalls()
        var seeds: [(FuzzTarget, String, [UInt8])] = []
        for (name, bytes) in calls {
            seeds.append((.requestDispatch, name, bytes))
        }
        seeds.append((.requestDispatch, "pipelined-calls", calls.map(\.bytes).reduce([], +)))
        seeds.append((.requestDispatch, "even-stream", request(streamID: 2, ProviderV1.health, .init())))
        seeds.append((.requestDispatch, "unknown-method", envelope(streamID: 5, service: ProviderV1.serviceName, method: "Reboot", payload: [])))
        seeds.append((.requestDispatch, "garbage-envelope", frame(streamID: 7, type: 1, data: [0xFF, 0xFF, 0xFF, 0x0F, 0x01])))
        seeds.append((.requestDispatch, "data-frame-ignored", frame(streamID: 9, type: 3, data: [1, 2, 3])))
        seeds.append((.requestDispatch, "expired-deadline", envelope(streamID: 11, service: ProviderV1.serviceName, method: "Health", payload: [], timeoutNanos: -1)))
        seeds.append((.requestDispatch, "oversized-header", header(length: UInt32(FrameHeader.maxDataLength + 1), streamID: 13, type: 1)))
        for (name, bytes) in controlCalls() {
            seeds.append((.requestDispatch, name, bytes))
        }

        // The frame decoder target reads its first byte as the read pattern
        // (odd: many small reads) and has a 64-byte frame limit.
        seeds.append((.frameDecoder, "one-frame-one-read", [0] + frame(streamID: 1, type: 1, data: Array("hello".utf8))))
        seeds.append((.frameDecoder, "frames-small-reads", [0x5B] + frame(streamID: 1, type: 1, data: [1, 2, 3]) + frame(streamID: 3, type: 2, data: []) + frame(streamID: 5, type: 9, data: [7])))
        seeds.append((.frameDecoder, "oversized-then-frame", [0x37] + header(length: 70, streamID: 1, type: 1) + Array(repeating: 0xAA, count: 70) + frame(streamID: 3, type: 1, data: [4])))
        seeds.append((.frameDecoder, "truncated", [0x01] + frame(streamID: 1, type: 1, data: [1, 2, 3, 4]).dropLast(2)))
        seeds.append((.frameDecoder, "truncated-oversized", [0x00] + header(length: 1_000, streamID: 1, type: 1) + [1, 2, 3]))
        return seeds
    }

    private static func providerCalls() -> [(name: String, bytes: [UInt8])] {
        let cloud = ProviderV1.CloudSpec.with { $0.type = "fake"; $0.region = "r1" }
        let credential = ProviderV1.Credential.with {
            $0.name = "good"
            $0.authType = "token"
            $0.attributes = ["token": "t"]
        }
        return [
            ("handshake", request(streamID: 1, ProviderV1.handshake, .with { $0.protocolVersions = [1] })),
            ("health", request(streamID: 3, ProviderV1.health, .init())),
            ("validate-credential", request(streamID: 5, ProviderV1.validateCredential, .with { $0.cloud = cloud; $0.credential = credential })),
            ("instances", request(streamID: 7, ProviderV1.instances, .with { $0.cloud = cloud; $0.credential = credential; $0.instanceIds = ["i-1", "i-2", "i-9"] }, timeoutNanos: 5_000_000_000)),
            ("network-interfaces", request(streamID: 9, ProviderV1.networkInterfaces, .with { $0.cloud = cloud; $0.credential = credential; $0.instanceIds = ["i-1"] })),
        ]
    }

    /// The control service's paged listings: pages, filters, and tokens
    /// that no controller issued.
    private static func controlCalls() -> [(name: String, bytes: [UInt8])] {
        let forged = "AW0tMTIAAAAAAAAAAAAAAAAAAAAA"
        return [
            ("control-list-pages", request(streamID: 1, ControlV1.listMachines, .with { $0.pageSize = 7 })
                + request(streamID: 3, ControlV1.listMachines, .with { $0.pageSize = 2; $0.idsOnly = true; $0.provider = "cloud" })),
            ("control-list-filters", request(streamID: 1, ControlV1.listMachines, .with {
                $0.provider = "other"
                $0.credential = "main"
                $0.state = "unspecified"
                $0.group = "none"
                $0.agentStatus = "none"
                $0.withError = false
            }) + request(streamID: 3, ControlV1.listMachines, .with { $0.state = "not-found"; $0.group = "medium" })),
            ("control-forged-tokens", request(streamID: 1, ControlV1.listMachines, .with { $0.pageToken = forged; $0.pageSize = 3 })
                + request(streamID: 3, ControlV1.events, .with { $0.pageToken = forged })
                + request(streamID: 5, ControlV1.listMachines, .with { $0.pageToken = "not base64!" })),
            ("control-events-status", request(streamID: 1, ControlV1.events, .with { $0.pageSize = 5; $0.afterRevision = 3 })
                + request(streamID: 3, ControlV1.events, .with { $0.afterRevision = 1000; $0.waitNano = 10_000_000 })
                + request(streamID: 5, ControlV1.status, .init())
                + request(streamID: 7, ControlV1.getMachine, .with { $0.id = "m-3" })),
            ("control-batches-refused", request(streamID: 1, ControlV1.addMachines, .with {
                $0.validateOnly = true
                $0.machines = [.with { $0.id = "x"; $0.provider = "cloud"; $0.credential = "main" }, .with { $0.id = "bad id" }]
            }) + request(streamID: 3, ControlV1.removeMachines, .with { $0.ids = ["m-1", "nope", "m-1"]; $0.validateOnly = true })),
        ]
    }

    private static func request<Request, Response>(
        streamID: UInt32,
        _ method: MethodDescriptor<Request, Response>,
        _ message: Request,
        timeoutNanos: Int64 = 0
    ) -> [UInt8] {
        let payload: [UInt8] = try! message.serializedBytes()
        return envelope(streamID: streamID, service: method.service, method: method.method, payload: payload, timeoutNanos: timeoutNanos)
    }

    private static func envelope(streamID: UInt32, service: String, method: String, payload: [UInt8], timeoutNanos: Int64 = 0) -> [UInt8] {
        let envelope = RequestEnvelope(service: service, method: method, payload: ByteBuffer(bytes: payload), timeoutNanos: timeoutNanos)
        let encoded = try! FrameEncoding.request(envelope, streamID: streamID, allocator: ByteBufferAllocator())
        return Array(encoded.contiguous.readableBytesView)
    }

    private static func frame(streamID: UInt32, type: UInt8, data: [UInt8]) -> [UInt8] {
        header(length: UInt32(data.count), streamID: streamID, type: type) + data
    }

    private static func header(length: UInt32, streamID: UInt32, type: UInt8) -> [UInt8] {
        var buffer = ByteBuffer()
        _ = buffer.writeFrameHeader(FrameHeader(dataLength: length, streamID: streamID, type: FrameType(rawValue: type)))
        return Array(buffer.readableBytesView)
    }
}
