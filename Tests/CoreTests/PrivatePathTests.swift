import Core
import Support
import Foundation
import Testing
import TestSupport

/// Directories and files that hold sockets or secrets are opened on
/// descriptors, never followed through a link, and must be this user's.
/// Files made "someone else's" are chowned to 65534 (nobody): the suites
/// run as root, as CI does.
@Suite("Private directories and files")
struct PrivatePathTests {
    static let nobody: uid_t = 65534

    @Test func createsPrivateDirectoriesWithTheirParentsAndRefusesOpenOnes() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let nested = directory.file("run/instancepoller")
        close(try PrivatePath.openDirectory(nested))
        #expect(try SocketFiles.mode(nested) == 0o700)
        #expect(try SocketFiles.mode(directory.file("run")) == 0o700)
        close(try PrivatePath.openDirectory(nested))  // existing and private: fine

        chmod(nested, 0o755)
        #expect {
            try PrivatePath.openDirectory(nested)
        } throws: { error in
            "\(error)".contains("mode 0755") && "\(error)".contains(nested)
        }
    }

    @Test func aDirectoryMadeBySomeoneElseIsRefusedNamingTheOwner() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("instancepoller-0")
        #expect(mkdir(path, 0o700) == 0 && chown(path, Self.nobody, Self.nobody) == 0)
        #expect {
            try PrivatePath.openDirectory(path)
        } throws: { error in
            "\(error)" == "\(path): directory belongs to uid 65534 (nobody), not to this user (uid \(getuid())); remove it, or choose another directory"
        }
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_uid == Self.nobody && info.st_mode & 0o777 == 0o700, "left as it was")
    }

    @Test func aSymbolicLinkInPlaceOfTheDirectoryIsNeverFollowed() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let elsewhere = directory.file("elsewhere")
        #expect(mkdir(elsewhere, 0o755) == 0)
        let path = directory.file("run")
        #expect(symlink(elsewhere, path) == 0)
        #expect {
            try PrivatePath.openDirectory(path)
        } throws: { error in
            "\(error)".contains("is a symbolic link") && "\(error)".contains("refusing to follow it")
        }
        #expect(try SocketFiles.mode(elsewhere) == 0o755, "the link's target is untouched")
    }

    @Test func aParentOthersCanWriteMustBeSticky() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let shared = directory.file("shared")
        #expect(mkdir(shared, 0o777) == 0 && chmod(shared, 0o777) == 0)
        #expect {
            try PrivatePath.openDirectory("\(shared)/run")
        } throws: { error in
            "\(error)".contains("mode 0777: others can rename what it holds")
        }
        #expect(!FileManager.default.fileExists(atPath: "\(shared)/run"), "nothing made there")
        chmod(shared, 0o1777)  // as /tmp: nobody can rename another's entries
        close(try PrivatePath.openDirectory("\(shared)/run"))
        #expect(try SocketFiles.mode("\(shared)/run") == 0o700)
    }

    @Test func privateFilesAreCreated0600AndOnlyOursAreOpened() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("secrets.db")
        let first = try PrivatePath.openPrivateFile(path, create: true)
        close(first.descriptor)
        #expect(first.created)
        #expect(try SocketFiles.mode(path) == 0o600)
        let again = try PrivatePath.openPrivateFile(path, create: true)
        close(again.descriptor)
        #expect(!again.created)

        chmod(path, 0o640)
        #expect { try PrivatePath.openPrivateFile(path, create: true) } throws: { "\($0)".contains("has mode 0640") }
        chmod(path, 0o600)
        #expect(chown(path, Self.nobody, Self.nobody) == 0)
        #expect { try PrivatePath.openPrivateFile(path, create: true) } throws: { "\($0)".contains("belongs to uid 65534 (nobody)") }
    }

    @Test func aPrivateFileIsNeverOpenedThroughALink() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let victim = directory.file("victim")
        #expect(FileManager.default.createFile(atPath: victim, contents: Data("precious\n".utf8)))
        chmod(victim, 0o600)
        let path = directory.file("store.db")
        #expect(symlink(victim, path) == 0)
        #expect { try PrivatePath.openPrivateFile(path, create: true) } throws: { "\($0)".contains("is a symbolic link") }
        #expect(FileManager.default.contents(atPath: victim) == Data("precious\n".utf8))
    }

    @Test func ownersAreNamed() {
        #expect(PrivatePath.owner(0) == "uid 0 (root)")
        #expect(PrivatePath.owner(65534) == "uid 65534 (nobody)")
        #expect(PrivatePath.owner(4_000_000_001) == "uid 4000000001")
    }
}
