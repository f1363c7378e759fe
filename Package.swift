// swift-tools-version:6.2
import PackageDescription

/// One strict settings block shared by every Swift target.
let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "instancepoller",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "instancepoller", targets: ["InstancePollerCLI"]),
        .executable(name: "provider-shim", targets: ["ProviderShimCLI"]),
        .executable(name: "rpc-bench", targets: ["RPCBench"]),
        .executable(name: "fleet-bench", targets: ["FleetBench"]),
        .executable(name: "instancepoller-fuzz", targets: ["InstancePollerFuzz"]),
        .library(name: "Core", targets: ["Core"]),
        .library(name: "Controller", targets: ["Controller"]),
        .library(name: "ControlAPI", targets: ["ControlAPI"]),
        .library(name: "ProviderShim", targets: ["ProviderShim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // Tracing, off unless configured: spans and W3C trace context, exported
        // over OTLP/HTTP only (no gRPC build).
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        // Linux calls that Swift's Glibc module does not expose.
        .target(name: "CSystemShims"),
        // The contract and nothing else: frames, envelopes, the RPC client and
        // server, the Unix transport and its peer checks, the generated ttrpc
        // and provider types, and the shim-contract constants. A shim written
        // in Swift by a third party imports this alone.
        .target(
            name: "Core",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // What the controller, the shims and the CLI share beside the contract:
        // the log line format, the YAML reader, process hardening, malloc
        // tuning and a thread helper.
        .target(
            name: "Support",
            dependencies: [
                "CSystemShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strictSettings
        ),
        // Writes the git revision into the executables that print it
        // (GeneratedBuildRevision.value); only they are rebuilt when it changes.
        .plugin(name: "BuildRevision", capability: .buildTool()),
        // The control service's types and method descriptors, shared by the
        // controller and the CLI.
        .target(
            name: "ControlAPI",
            dependencies: [
                "Core",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strictSettings
        ),
        // The Echo service the RPC tests and scripts/bench-rpc call.
        .target(
            name: "Echo",
            dependencies: [
                "Core",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strictSettings
        ),
        // The controller: domain model, store, poll engine, shim supervision,
        // control service, metrics, runtime.
        .target(
            name: "Controller",
            dependencies: [
                "Core",
                "ControlAPI",
                "Support",
                "CSystemShims",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // The shared store (several controllers) and sealed credentials.
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                // Spans per batch and per provider call, exported when configured.
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "OTel", package: "swift-otel"),
            ],
            swiftSettings: strictSettings
        ),
        // The shim SDK: serves the provider contract under the shim process
        // contract around a backend.
        .target(
            name: "ProviderShim",
            dependencies: [
                "Core",
                "Support",
                "CSystemShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                // Server spans continuing the controller's trace, exported
                // when the controller passes the OTLP settings.
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "OTel", package: "swift-otel"),
            ],
            swiftSettings: strictSettings
        ),
        // The fake cloud backend (scenario files, a control service), for the
        // demo and the tests.
        .target(
            name: "FakeProvider",
            dependencies: [
                "ProviderShim",
                "Core",
                "Support",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strictSettings
        ),
        // What the real cloud backends share: reading XML answers, and the
        // HTTP client that routes each request through the proxy the
        // environment names (HTTPS_PROXY, HTTP_PROXY, NO_PROXY).
        .target(
            name: "CloudSupport",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                // Each cloud request a client span of the shim's trace.
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strictSettings
        ),
        // The ec2 backend: EC2 Query API over HTTPS, Signature V4.
        .target(
            name: "EC2Provider",
            dependencies: [
                "CloudSupport",
                "ProviderShim",
                "Core",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        // The vsphere backend: vSphere Web Services API (SOAP) over HTTPS.
        .target(
            name: "VSphereProvider",
            dependencies: [
                "CloudSupport",
                "ProviderShim",
                "Core",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "InstancePollerCLI",
            dependencies: [
                "Controller",
                "ControlAPI",
                "Core",
                "Support",
                // The demo serves its fake clouds from this same binary (and
                // links no real cloud backend).
                "ProviderShim",
                "FakeProvider",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings,
            plugins: ["BuildRevision"]
        ),
        .executableTarget(
            name: "ProviderShimCLI",
            dependencies: [
                "ProviderShim",
                "FakeProvider",
                "EC2Provider",
                "VSphereProvider",
                "CloudSupport",
                "Core",
                "Support",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings,
            plugins: ["BuildRevision"]
        ),
        // Echo client and server for scripts/bench-rpc.
        .executableTarget(
            name: "RPCBench",
            dependencies: [
                "Core",
                "Echo",
                "Support",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/RPCBench",
            swiftSettings: strictSettings
        ),
        // The fleet benchmark driver for scripts/bench.
        .executableTarget(
            name: "FleetBench",
            dependencies: [
                "Controller", "ControlAPI", "Core", "Support", "ProviderShim", "FakeProvider",
                .product(name: "GRDB", package: "GRDB.swift"),
                // The cluster benchmark's own queries (ClusterBench.swift).
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/FleetBench",
            swiftSettings: strictSettings
        ),
        // The inputs taken from outside, as fuzz targets with their properties
        // (scripts/fuzz; the tests replay Fuzz/corpus and Fuzz/regressions).
        .target(
            name: "FuzzTargets",
            dependencies: [
                "Core", "ControlAPI", "Support", "Controller", "ProviderShim", "FakeProvider",
                // The ec2-xml and vsphere-soap targets read the clouds' answers.
                "EC2Provider", "VSphereProvider",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strictSettings
        ),
        // libFuzzer driver when built by scripts/fuzz; an input replayer otherwise.
        .executableTarget(
            name: "InstancePollerFuzz",
            dependencies: ["FuzzTargets"],
            swiftSettings: strictSettings
        ),
        // Shared by the test targets: timeouts, events, raw connections, child
        // processes, the PostgreSQL test cluster (which hands out the
        // controller's PostgresLocation).
        .target(
            name: "TestSupport",
            dependencies: [
                "Core",
                "Controller",
                "Support",
                "CSystemShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "CoreTests",
            dependencies: [
                "Core",
                "Echo",
                "Support",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ControllerTests",
            dependencies: [
                // Built so supervisor tests can start the real provider-shim.
                "ProviderShimCLI",
                "Controller", "ControlAPI", "ProviderShim", "FakeProvider", "Core", "Support", "TestSupport",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                // The store tests look under the store at the raw file.
                .product(name: "GRDB", package: "GRDB.swift"),
                // Trace context in request metadata.
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "OTel", package: "swift-otel"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ProviderShimTests",
            dependencies: [
                "ProviderShim", "FakeProvider", "EC2Provider", "VSphereProvider", "CloudSupport", "Controller", "Core", "Support", "TestSupport",
                // Built so the process-contract tests can run the real binary.
                "ProviderShimCLI",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                // The vsphere unit tests' stub vCenter.
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                // Server spans continuing a trace from request metadata.
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "OTel", package: "swift-otel"),
            ],
            swiftSettings: strictSettings
        ),
        // The real binaries as processes: instancepoller with provider-shim
        // fake and the C shim fixture (supervision, swap, shutdown).
        .testTarget(
            name: "SystemTests",
            dependencies: [
                // Built so the tests can run them.
                "InstancePollerCLI", "ProviderShimCLI",
                "Controller", "ControlAPI", "Core", "Support", "ProviderShim", "FakeProvider", "TestSupport",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                // `--format yaml` is read back and compared with the JSON.
                .product(name: "Yams", package: "Yams"),
                // The fault tests check the store file with PRAGMA integrity_check.
                .product(name: "GRDB", package: "GRDB.swift"),
                // The tracing test's OTLP/HTTP collector.
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // Replays the committed fuzz corpus and every regression input.
        .testTarget(
            name: "FuzzTests",
            dependencies: ["FuzzTargets", "Core", "Support", "Controller", "ProviderShim", "TestSupport"],
            swiftSettings: strictSettings
        ),
        // Interop with containerd's Go ttrpc; Go sources in Tests/Fixtures/go.
        .testTarget(
            name: "InteropTests",
            dependencies: [
                "ProviderShim",
                "FakeProvider",
                // Built so interop tests can run the real provider-shim binary.
                "ProviderShimCLI",
                "Controller",
                "Core",
                "Echo",
                "Support",
                "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
    ]
)
