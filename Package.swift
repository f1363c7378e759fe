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
    ],
    targets: [
        // Linux calls that Swift's Glibc module does not expose.
        .target(name: "CSystemShims"),
        // Wire protocol, generated protobuf types, RPC client and server.
        .target(
            name: "Core",
            dependencies: [
                "CSystemShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strictSettings
        ),
        // The controller: talks to provider shims.
        .target(
            name: "Controller",
            dependencies: [
                "Core",
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
            ],
            swiftSettings: strictSettings
        ),
        // The shim SDK: serves the provider contract; built-in backends.
        .target(
            name: "ProviderShim",
            dependencies: [
                "Core",
                "CSystemShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Yams", package: "Yams"),
                // The ec2 backend: EC2 Query API over HTTPS, Signature V4.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "InstancePollerCLI",
            dependencies: [
                "Controller",
                "Core",
                // The demo serves its fake clouds from this same binary.
                "ProviderShim",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "ProviderShimCLI",
            dependencies: [
                "ProviderShim",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOPosix", package: "swift-nio"),
                "Core",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        // Echo client and server for scripts/bench-rpc.
        .executableTarget(
            name: "RPCBench",
            dependencies: [
                "Core",
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
                "Controller", "Core", "ProviderShim",
                .product(name: "GRDB", package: "GRDB.swift"),
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
                "Core", "Controller", "ProviderShim",
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
        // Shared by the test targets: timeouts, events, raw connections, child processes.
        .target(
            name: "TestSupport",
            dependencies: [
                "Core",
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
                "Controller", "ProviderShim", "Core", "TestSupport",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                // The store tests look under the store at the raw file.
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "ProviderShimTests",
            dependencies: [
                "ProviderShim", "Controller", "Core", "TestSupport",
                // Built so the process-contract tests can run the real binary.
                "ProviderShimCLI",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
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
                "Controller", "Core", "ProviderShim", "TestSupport",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                // The fault tests check the store file with PRAGMA integrity_check.
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strictSettings
        ),
        // Replays the committed fuzz corpus and every regression input.
        .testTarget(
            name: "FuzzTests",
            dependencies: ["FuzzTargets", "Core", "Controller", "ProviderShim", "TestSupport"],
            swiftSettings: strictSettings
        ),
        // Interop with containerd's Go ttrpc; Go sources in Tests/Fixtures/go.
        .testTarget(
            name: "InteropTests",
            dependencies: [
                "ProviderShim",
                // Built so interop tests can run the real provider-shim binary.
                "ProviderShimCLI",
                "Controller",
                "Core",
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
