@testable import Core
import Foundation
import NIOCore
import NIOPosix
import Testing
import TestSupport

/// The server's peer check through a connection's ``PeerProcess``: a pidfd
/// of the peer asked for its uids where the kernel can, else
/// `/proc/<pid>/status` by pid number.
@Suite("Peer process")
struct PeerProcessTests {
    @Test func parsesTheUidLineOfAProcStatus() {
        let status = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t1000\t1000\nGid:\t100\t100\t100\t100\n"
        #expect(PeerCredentials.parseUIDs(status: ArraySlice(status.utf8)) == PeerCredentials.ProcessUIDs(real: 1000, effective: 0))
        #expect(PeerCredentials.parseUIDs(status: ArraySlice("Name:\tx\nGid:\t1\t1\n".utf8)) == nil)
        #expect(PeerCredentials.parseUIDs(status: ArraySlice("Uid:\t1000\n".utf8)) == nil)
    }

    /// What the kernel says of a pidfd of this process (from a socketpair,
    /// whose peer is its creator): `.unsupported` before Linux 6.13.
    static func ownPIDFDAnswer() -> PeerProcess.PIDFDAnswer {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { return .unsupported }
        defer { fds.forEach { close($0) } }
        var pidfd: Int32 = -1
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fds[0], SOL_SOCKET, PeerProcess.soPeerPIDFD, &pidfd, &length) == 0 else { return .unsupported }
        defer { close(pidfd) }
        return PeerProcess.uids(ofPIDFD: pidfd)
    }

    @Test func aPIDFDTellsTheUIDsOfItsProcess() {
        let answer = Self.ownPIDFDAnswer()
        // Before Linux 6.13 the kernel cannot say, and the server reads /proc.
        let expected: Set<PeerProcess.PIDFDAnswer> = [.uids(PeerCredentials.ProcessUIDs(real: getuid(), effective: geteuid())), .unsupported]
        #expect(expected.contains(answer))
    }

    /// A peer in another process (perl, which scripts/test installs),
    /// connected to a socket of this test, holding on until its stdin closes.
    @Test func aPeerPassesUntilItHasExited() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("peer.sock")
        let accepted = TestEvent<NIOLoopBound<PeerProcess>>()
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                PeerCredentials.of(channel).map { peer in
                    accepted.signal(NIOLoopBound(PeerProcess(credentials: peer, channel: channel), eventLoop: channel.eventLoop))
                }
            }
            .bind(unixDomainSocketPath: path)
            .get()
        let script = #"my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!"; $| = 1; print "connected\n"; <STDIN>;"#
        let child = try await ChildProcess.spawn("/usr/bin/perl", ["-MIO::Socket::UNIX", "-e", script, path])
        #expect(try await child.nextLine() == "connected")
        let bound = try await accepted.wait(.seconds(10), "the peer's connection")
        let eventLoop = bound.eventLoop

        let (alive, viaPIDFD) = try await eventLoop.submit {
            (bound.value.recheck(against: .sameUserOrRoot), bound.value.usesPIDFD)
        }.get()
        #expect(alive == nil)
        #expect(viaPIDFD == (Self.ownPIDFDAnswer() != .unsupported))

        child.closeStdin()
        _ = try await child.waitForExit()
        let gone = try await eventLoop.submit { bound.value.recheck(against: .sameUserOrRoot) }.get()
        #expect(gone == "peer process \(child.pid) is gone")
        try await listener.close()
    }
}
