import Foundation
import Testing
import TestSupport

/// The package's target graph, as SwiftPM itself reads it
/// (`swift package describe`): Core is the contract and nothing else, the
/// controller binary links no real cloud backend, and the shim SDK no HTTPS
/// client (docs/DESIGN.md §2). The controller does link TLS and crypto: its
/// PostgreSQL client speaks TLS to the database, and it seals credentials.
@Suite("Package graph")
struct PackageGraphTests {
    struct Target: Decodable {
        var name: String
        var target_dependencies: [String]?
        var product_dependencies: [String]?
    }

    struct Description: Decodable {
        var targets: [Target]
    }

    /// What a cloud's HTTPS client brings in.
    static let cloudClientProducts: Set<String> = ["AsyncHTTPClient", "NIOHTTP2"]
    /// TLS and crypto: the controller's, for PostgreSQL and sealing; never
    /// the shim SDK's (a shim in Swift brings its own if it needs them).
    static let tlsProducts: Set<String> = ["Crypto", "NIOSSL", "PostgresNIO"]

    static func describe() async throws -> [String: Target] {
        let swift = try #require(
            (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
                .map { "\($0)/swift" }.first { FileManager.default.isExecutableFile(atPath: $0) },
            "swift is not on PATH"
        )
        let scratch = try TemporaryDirectory()
        defer { scratch.remove() }
        // Its own scratch path, so it never waits for the build lock of the
        // `swift test` running this.
        let process = try await ChildProcess.spawn(
            swift, ["package", "--package-path", BuiltProducts.repositoryRoot, "--scratch-path", scratch.path, "describe", "--type", "json"]
        )
        let (stdout, stderr) = try await process.output(.seconds(60))
        #expect(try await process.waitForExit() == 0, "swift package describe: \(stderr)")
        let description = try JSONDecoder().decode(Description.self, from: Data(stdout.utf8))
        return Dictionary(uniqueKeysWithValues: description.targets.map { ($0.name, $0) })
    }

    /// Every target `name` depends on, itself included, and every product
    /// they take from other packages.
    static func closure(of name: String, in targets: [String: Target]) -> (targets: Set<String>, products: Set<String>) {
        var seen: Set<String> = []
        var products: Set<String> = []
        var queue = [name]
        while let next = queue.popLast() {
            guard seen.insert(next).inserted, let target = targets[next] else { continue }
            products.formUnion(target.product_dependencies ?? [])
            queue += target.target_dependencies ?? []
        }
        return (seen, products)
    }

    @Test func coreDependsOnlyOnWhatTheContractNeeds() async throws {
        let targets = try await Self.describe()
        let core = try #require(targets["Core"])
        #expect(Set(core.target_dependencies ?? []).isSubset(of: ["CSystemShims"]))
        #expect(Set(core.product_dependencies ?? []).isSubset(of: ["NIOCore", "NIOPosix", "NIOConcurrencyHelpers", "SwiftProtobuf", "Logging"]))
    }

    @Test func theControllerBinaryAndTheShimSDKLinkNoCloudClient() async throws {
        let targets = try await Self.describe()
        for name in ["InstancePollerCLI", "ProviderShim", "Controller"] {
            let (reached, products) = Self.closure(of: name, in: targets)
            #expect(reached.contains("Core"), "\(name) should reach Core")
            #expect(!reached.contains("EC2Provider"), "\(name) reaches the EC2 backend")
            #expect(!reached.contains("VSphereProvider"), "\(name) reaches the vSphere backend")
            #expect(products.isDisjoint(with: Self.cloudClientProducts), "\(name) links \(products.intersection(Self.cloudClientProducts).sorted())")
        }
        let (_, sdk) = Self.closure(of: "ProviderShim", in: targets)
        #expect(sdk.isDisjoint(with: Self.tlsProducts), "the shim SDK links \(sdk.intersection(Self.tlsProducts).sorted())")
        #expect(Self.closure(of: "Controller", in: targets).products.contains("PostgresNIO"))
        // The fuzz targets (the ec2-xml one reaches EC2Provider) stay out
        // of the controller binary.
        #expect(!Self.closure(of: "InstancePollerCLI", in: targets).targets.contains("FuzzTargets"))
        // What the cloud backends share is the cloud side only, for any
        // backend to reuse (docs/DESIGN.md §7.2).
        let (shared, _) = Self.closure(of: "CloudSupport", in: targets)
        #expect(shared == ["CloudSupport"], "CloudSupport depends on \(shared.sorted())")
        // The shim binary has every backend: the check above can fail.
        let (reached, products) = Self.closure(of: "ProviderShimCLI", in: targets)
        #expect(reached.contains("EC2Provider"))
        #expect(reached.contains("VSphereProvider"))
        #expect(products.contains("AsyncHTTPClient"))
    }
}
