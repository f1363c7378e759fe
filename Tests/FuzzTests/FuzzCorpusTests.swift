import Foundation
import FuzzTargets
import Testing
import TestSupport

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

    @Test(arguments: FuzzTarget.allCases)
    func everySeedHoldsTheProperties(_ target: FuzzTarget) throws {
        let files = Self.inputs("corpus", target)
        #expect(files.count >= 3, "a seed corpus for \(target.rawValue) is committed")
        for file in files {
            let input = try #require(FileManager.default.contents(atPath: file), "\(file) is readable")
            #expect(throws: Never.self, "\(file)") { try target.run(Array(input)) }
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func everyRegressionInputHoldsTheProperties(_ target: FuzzTarget) throws {
        for file in Self.inputs("regressions", target) {
            let input = try #require(FileManager.default.contents(atPath: file), "\(file) is readable")
            #expect(throws: Never.self, "\(file)") { try target.run(Array(input)) }
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
