import FuzzTargets
import Foundation

/// The target libFuzzer's callback runs; set once before fuzzing starts.
nonisolated(unsafe) var selected = FuzzTarget.frameDecoder

#if FUZZING
/// libFuzzer calls this once with its command line; `--target=NAME` (which
/// libFuzzer itself ignores) picks the target.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> Int32 {
    let arguments = (0..<Int(argc.pointee)).compactMap { argv.pointee?[$0].map { String(cString: $0) } }
    guard let flag = arguments.first(where: { $0.hasPrefix("--target=") }) else {
        InstancePollerFuzz.fail(2, "instancepoller-fuzz: name a target with --target=NAME; targets: \(InstancePollerFuzz.targetNames)")
    }
    selected = InstancePollerFuzz.target(named: String(flag.dropFirst("--target=".count)))
    return 0
}

/// One input. A broken property is a crash to libFuzzer, which then saves
/// the input as an artifact.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
    do {
        try selected.run(input)
    } catch {
        fatalError("property violated: \(error)")
    }
    return 0
}
#endif

/// `instancepoller-fuzz`, built two ways.
///
/// `scripts/fuzz` builds it with `--sanitize=fuzzer -DFUZZING`: libFuzzer's
/// own `main` then runs, and `--target=NAME` with libFuzzer's flags and
/// corpus directories fuzzes one target. A plain build replays inputs
/// instead, `instancepoller-fuzz TARGET FILE|DIR...`: each input runs once
/// and its result is printed, which is how a crash file is reproduced and
/// debugged. `instancepoller-fuzz seeds DIR` writes the binary seed corpus.
enum InstancePollerFuzz {
    static func fail(_ status: Int32, _ message: String) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(status)
    }

    static let targetNames = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")

    /// The target called `name`, or exit 2 naming the targets there are.
    static func target(named name: String) -> FuzzTarget {
        guard let target = FuzzTarget(rawValue: name) else {
            fail(2, "instancepoller-fuzz: unknown target \"\(name)\"; targets: \(targetNames)")
        }
        return target
    }

    static func replay(_ target: FuzzTarget, paths: [String]) -> Int32 {
        guard !paths.isEmpty else { fail(2, "instancepoller-fuzz \(target.rawValue): name the input files or directories to replay") }
        var failed = 0
        var files: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                fail(1, "\(path): no such file or directory")
            }
            if isDirectory.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                files += names.sorted().map { "\(path)/\($0)" }
            } else {
                files.append(path)
            }
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                fail(1, "\(file): cannot read")
            }
            do {
                try target.run(Array(data))
                print("ok    \(file)")
            } catch {
                failed += 1
                print("FAIL  \(file): \(error)")
            }
        }
        print("\(files.count) inputs, \(failed) failed")
        return failed == 0 ? 0 : 1
    }

    static func writeSeeds(into directory: String) {
        for seed in FuzzSeeds.binary() {
            let folder = "\(directory)/\(seed.target.rawValue)"
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                try Data(seed.bytes).write(to: URL(fileURLWithPath: "\(folder)/\(seed.name)"))
            } catch {
                fail(1, "\(folder)/\(seed.name): \(error)")
            }
        }
        print("wrote \(FuzzSeeds.binary().count) seeds under \(directory)")
    }
}

#if !FUZZING
@main
enum ReplayMain {
    static func main() {
        let arguments = CommandLine.arguments
        guard arguments.count >= 2 else {
            InstancePollerFuzz.fail(2, "usage: instancepoller-fuzz TARGET FILE|DIR... | seeds DIR; targets: \(InstancePollerFuzz.targetNames)")
        }
        if arguments[1] == "seeds" {
            guard arguments.count == 3 else { InstancePollerFuzz.fail(2, "usage: instancepoller-fuzz seeds DIR") }
            InstancePollerFuzz.writeSeeds(into: arguments[2])
            return
        }
        let target = InstancePollerFuzz.target(named: arguments[1])
        exit(InstancePollerFuzz.replay(target, paths: Array(arguments.dropFirst(2))))
    }
}
#endif
