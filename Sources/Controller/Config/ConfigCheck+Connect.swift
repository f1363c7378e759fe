public import Core
public import Logging
internal import Foundation
#if canImport(Glibc)
internal import Glibc
#endif

extension ConfigCheck {
    /// What `check-config --connect` found for one credential.
    public struct CredentialVerdict: Hashable, Sendable {
        public enum Outcome: String, Hashable, Sendable {
            case valid, invalid, unreachable
        }

        public var provider: String
        public var name: String
        public var outcome: Outcome
        /// Why it is invalid or unreachable (the shim's words; never the
        /// secret).
        public var reason: String
    }

    /// What `check-config --connect` found for one provider's shim.
    public struct ShimVerdict: Hashable, Sendable {
        public var provider: String
        /// `name version` from the handshake, when it started.
        public var shim: String?
        /// The shim did not start, or its Health did not say serving.
        public var problem: String?
    }

    /// Starts each provider's shim as the controller does (``ShimLauncher``,
    /// the supervisor's socket naming and start-up bound) with its sockets
    /// in a new private temporary directory, so a running controller's
    /// runtime directory is left alone; calls Health, then
    /// ValidateCredential for each of the provider's credentials; stops
    /// the shim as the supervisor does (Shutdown, drain, then signals).
    /// Shims are checked one at a time.
    public static func connect(
        _ config: ControllerConfig, logger: Logger
    ) async -> (shims: [ShimVerdict], credentials: [CredentialVerdict]) {
        var shims: [ShimVerdict] = []
        var credentials: [CredentialVerdict] = []
        var template = Array("\(NSTemporaryDirectory().hasSuffix("/") ? NSTemporaryDirectory() : NSTemporaryDirectory() + "/")instancepoller-check-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            let problem = "cannot make a temporary directory for the shims' sockets: \(String(cString: strerror(errno)))"
            for provider in config.providers { shims.append(ShimVerdict(provider: provider.name, problem: problem)) }
            return (shims, [])
        }
        let directory = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let settings = config.supervision
        for provider in config.providers {
            let owned = config.credentials.filter { $0.provider == provider.name }
            func unreachable(_ reason: String) {
                for credential in owned {
                    credentials.append(CredentialVerdict(provider: provider.name, name: credential.name, outcome: .unreachable, reason: reason))
                }
            }
            var socketDirectory = directory
            if provider.shim.dropsPrivileges, let user = provider.shim.user {
                do {
                    socketDirectory = try ShimDirectory.prepare(runtimeDirectory: directory, provider: provider.name, user: user)
                } catch {
                    shims.append(ShimVerdict(provider: provider.name, problem: "\(error)"))
                    unreachable("the shim did not start")
                    continue
                }
            }
            let shim: RunningShim
            do {
                shim = try await ShimLauncher.start(
                    provider: provider.name, command: provider.shim, socketPath: "\(socketDirectory)/\(provider.name)-1.sock",
                    startupTimeout: settings.startupTimeout, logger: logger
                )
            } catch {
                shims.append(ShimVerdict(provider: provider.name, problem: error.description))
                unreachable("the shim did not start")
                continue
            }
            var verdict = ShimVerdict(provider: provider.name, shim: "\(shim.handshake.shimName) \(shim.handshake.shimVersion)")
            do {
                let health = try await shim.client.health(timeout: settings.healthTimeout)
                if health.status != .serving {
                    verdict.problem = "provider \(provider.name): the shim's Health says \(health.status)\(health.message.isEmpty ? "" : ": \(health.message)")"
                }
            } catch {
                verdict.problem = "provider \(provider.name): Health failed: \(RPCError(from: error).message)"
            }
            shims.append(verdict)
            let timeout = config.providerCallTimeouts[provider.name] ?? config.callTimeout
            for credential in owned {
                do {
                    let answer = try await shim.client.validateCredential(cloud: provider.cloud, credential: credential.wire, timeout: timeout)
                    credentials.append(CredentialVerdict(
                        provider: provider.name, name: credential.name, outcome: answer.valid ? .valid : .invalid, reason: answer.valid ? "" : answer.reason
                    ))
                } catch {
                    let rpc = RPCError(from: error)
                    credentials.append(CredentialVerdict(
                        provider: provider.name, name: credential.name, outcome: .unreachable, reason: "\(rpc.code): \(rpc.message)"
                    ))
                }
            }
            await ProviderSupervisor.terminate(shim, graceful: true, settings: settings)
        }
        return (shims, credentials)
    }
}
