import Core
import Foundation
import FuzzTargets
import Testing
import TestSupport
import Support

/// The fuzz targets' committed inputs, replayed on every test run: the seed
/// corpus (`Fuzz/corpus/TARGET`) and each input that once broke a property
/// (`Fuzz/regressions/TARGET`, named after what it broke).
@Suite("Fuzz corpus and regressions")
struct FuzzCorpusTests {
    static let fuzzDirectory = "\(BuiltProducts.repositoryRoot)/Fuzz"

    static func inputs(_ kind: String, _ target: FuzzTarget) -> [String] {
        let directory = "\(fuzzDirectory)/\(kind)/\(target.rawValue)"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.sorted().map { "\(directory)/\($0)" }
    }

    /// The property `input` broke, or nil. Run on a thread of its own, as
    /// libFuzzer runs it: the request-dispatch target blocks on its socket
    /// until the served handlers answer, and those run on Swift's few
    /// cooperative threads, which the rest of the suite needs too.
    static func violation(_ target: FuzzTarget, _ input: [UInt8]) async -> String? {
        await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
            DetachedThread.run {
                do {
                    try target.run(input)
                    continuation.resume(returning: nil)
                } catch {
                    continuation.resume(returning: "\(error)")
                }
            }
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func everySeedHoldsTheProperties(_ target: FuzzTarget) async throws {
        let files = Self.inputs("corpus", target)
        #expect(files.count >= 3, "a seed corpus for \(target.rawValue) is committed")
        for file in files {
            let input = try #require(FileManager.default.contents(atPath: file), "\(file) is readable")
            let broken = await Self.violation(target, Array(input))
            #expect(broken == nil, "\(file)")
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func everyRegressionInputHoldsTheProperties(_ target: FuzzTarget) async throws {
        for file in Self.inputs("regressions", target) {
            let input = try #require(FileManager.default.contents(atPath: file), "\(file) is readable")
            let broken = await Self.violation(target, Array(input))
            #expect(broken == nil, "\(file)")
        }
    }

    @Test func theCommittedBinarySeedsAreTheGeneratedOnes() throws {
        for seed in FuzzSeeds.binary() {
            let file = "\(Self.fuzzDirectory)/corpus/\(seed.target.rawValue)/\(seed.name)"
            let committed = try #require(FileManager.default.contents(atPath: file), "\(file) is committed (instancepoller-fuzz seeds Fuzz/corpus)")
            #expect(Array(committed) == seed.bytes, "\(file) matches FuzzSeeds")
        }
    }
}
