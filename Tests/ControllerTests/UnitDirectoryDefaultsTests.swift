import Controller
import Testing

/// The defaults follow systemd's unit directories: `$RUNTIME_DIRECTORY` and
/// `$STATE_DIRECTORY` before everything else, the first of several; the CLI
/// also finds the unit's `/run/instancepoller` when it is the caller's.
@Suite("Defaults from the systemd unit's directories")
struct UnitDirectoryDefaultsTests {
    static let user: [String: String] = ["XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/op", "XDG_STATE_HOME": "/srv/state"]

    @Test func theUnitsDirectoriesComeFirstForRootAndOthers() {
        let unit = Self.user.merging(["RUNTIME_DIRECTORY": "/run/instancepoller", "STATE_DIRECTORY": "/var/lib/instancepoller"]) { $1 }
        for uid: UInt32 in [0, 998] {
            #expect(ControllerConfig.defaultRuntimeDirectory(environment: unit, uid: uid) == "/run/instancepoller")
            #expect(ControllerConfig.defaultStateDirectory(environment: unit, uid: uid) == "/var/lib/instancepoller")
        }
        let several = ["RUNTIME_DIRECTORY": "/run/a:/run/b", "STATE_DIRECTORY": "/var/lib/a:/var/lib/b"]
        #expect(ControllerConfig.defaultRuntimeDirectory(environment: several, uid: 998) == "/run/a")
        #expect(ControllerConfig.defaultStateDirectory(environment: several, uid: 998) == "/var/lib/a")
        // Not absolute, or empty: ignored.
        let odd = Self.user.merging(["RUNTIME_DIRECTORY": "run/x", "STATE_DIRECTORY": ""]) { $1 }
        #expect(ControllerConfig.defaultRuntimeDirectory(environment: odd, uid: 1000) == "/run/user/1000/instancepoller")
        #expect(ControllerConfig.defaultStateDirectory(environment: odd, uid: 1000) == "/srv/state/instancepoller")
    }

    @Test func aConfigWithoutStoreOrRuntimeDirectoryUsesThem() throws {
        let environment = ["RUNTIME_DIRECTORY": "/run/instancepoller", "STATE_DIRECTORY": "/var/lib/instancepoller", "HOME": "/home/op"]
        let config = try ControllerConfig.parse(
            "providers:\n  aws:\n    shim: {command: /bin/true}\n    cloud: {type: ec2}\n", file: "/etc/instancepoller/config.yaml", environment: environment)
        #expect(config.runtimeDirectory == "/run/instancepoller")
        #expect(config.storePath == "/var/lib/instancepoller/instancepoller.db")
        #expect(config.storeDirectoryIsDefault)
    }

    @Test func theCLIFindsTheUnitsRuntimeDirectoryWhenItIsTheCallers() {
        let owner: (String) -> UInt32? = { $0 == "/run/instancepoller" ? 998 : nil }
        // The service user (sudo -u instancepoller instancepoller status).
        #expect(ControllerConfig.clientRuntimeDirectory(environment: [:], uid: 998, ownerOf: owner) == "/run/instancepoller")
        // Another user: their own default.
        #expect(ControllerConfig.clientRuntimeDirectory(environment: Self.user, uid: 1000, ownerOf: owner) == "/run/user/1000/instancepoller")
        // $RUNTIME_DIRECTORY wins (a command run by the unit itself).
        #expect(ControllerConfig.clientRuntimeDirectory(environment: ["RUNTIME_DIRECTORY": "/run/other"], uid: 998, ownerOf: owner) == "/run/other")
        #expect(ControllerConfig.clientRuntimeDirectory(environment: [:], uid: 0, ownerOf: owner) == "/run/instancepoller")
    }
}
