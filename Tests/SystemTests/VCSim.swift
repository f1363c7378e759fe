import Foundation
import Testing
import TestSupport

/// govmomi's vCenter simulator (Debian's golang-github-vmware-govmomi-dev
/// 0.24.2, installed by scripts/test) set up by Tests/Fixtures/vsphere:
/// datacenter DC0 with VMs in its VM folder and in the folders apps and
/// apps/batch, several cards with IPv4 and IPv6 guest addresses, VMs
/// powered off, suspended and destroyed, two VMs with one name. Built once
/// per test run into .build/vsphere-go; one simulator serves the run.
final class VCSim: Sendable {
    struct Address: Decodable, Sendable, Equatable {
        var ip: String
        var prefix: Int
        var type: String
        var cidr: String
        var scope: String
    }

    struct Card: Decodable, Sendable, Equatable {
        var key: Int32
        var type: String
        var mac: String
        var network: String
        var connected: Bool
        var addresses: [Address]
    }

    struct VM: Decodable, Sendable {
        var name: String
        var folder: String
        var moref: String
        var uuid: String
        var power_state: String
        var guest_state: String
        var cards: [Card]
    }

    /// What the fixture made, read back from the simulator.
    struct Truth: Decodable, Sendable {
        var url: String
        var user: String
        var password: String
        var noperm_user: String
        var noperm_password: String
        var datacenter: String
        var vms: [VM]
        var removed: [String]

        /// The VMs named `name`, the oldest (lowest vm-N) first.
        func named(_ name: String) -> [VM] {
            vms.filter { $0.name == name }.sorted { Int($0.moref.dropFirst(3)) ?? 0 < Int($1.moref.dropFirst(3)) ?? 0 }
        }

        /// Names borne by exactly one VM.
        var uniqueNames: [String] {
            Dictionary(grouping: vms, by: \.name).filter { $0.value.count == 1 }.keys.sorted()
        }
    }

    static let fixtureDirectory = BuiltProducts.repositoryRoot + "/Tests/Fixtures/vsphere"
    static let outputDirectory = BuiltProducts.repositoryRoot + "/.build/vsphere-go"

    private static let build = Task<Void, any Error> {
        let child = try await ChildProcess.spawn("/bin/bash", [fixtureDirectory + "/build.sh", outputDirectory])
        let status = try await child.waitForExit(.seconds(600))
        guard status == 0 else { throw Failed(description: "building the vCenter simulator fixture failed (is golang-github-vmware-govmomi-dev installed? run scripts/test):\n\(child.stderr)") }
    }

    struct Failed: Error, CustomStringConvertible {
        var description: String
    }

    let process: ChildProcess
    let truth: Truth

    private init(process: ChildProcess, truth: Truth) {
        self.process = process
        self.truth = truth
    }

    /// Builds (once) and starts the simulator; returns once it has printed
    /// its truth. It goes when the test process does (stdin EOF or parent
    /// death, see the fixture).
    static func start(_ arguments: [String] = []) async throws -> VCSim {
        try await build.value
        let process = try await ChildProcess.spawn(outputDirectory + "/vcsim", arguments)
        do {
            guard let line = try await process.nextLine(.seconds(60)) else {
                throw Failed(description: "the simulator printed no truth: \(process.stderr)")
            }
            return VCSim(process: process, truth: try JSONDecoder().decode(Truth.self, from: Data(line.utf8)))
        } catch {
            process.kill()
            throw error
        }
    }

    /// SOAP requests served so far, or those of one method.
    func requests(_ method: String? = nil) -> Int {
        process.stderrLines.lines.filter { line in
            guard line.hasPrefix("soap ") else { return false }
            return method.map { line == "soap \($0)" } ?? true
        }.count
    }

    var logins: Int { requests("Login") }

    /// Runs a fixture command (power-off NAME, power-on NAME, rename NAME
    /// NEW, destroy NAME, expire-sessions) and waits for its
    /// acknowledgement.
    func command(_ text: String) async throws {
        process.writeStdin(text + "\n")
        let answer = try await process.nextLine(.seconds(30))
        guard answer == "ok \(text)" else { throw Failed(description: "the simulator answered \(answer ?? "nothing") to \(text)") }
    }
}
