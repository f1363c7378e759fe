internal import AsyncHTTPClient
public import CloudSupport
internal import Core
internal import Crypto
internal import Foundation
public import Logging
internal import NIOConcurrencyHelpers
internal import NIOCore
internal import NIOHTTP1

/// Where the vSphere Web Services API (the SDK) of one cloud spec is.
struct VSphereEndpoint: Hashable, Sendable {
    /// The SDK's URL, e.g. `https://vcenter.example.com/sdk`.
    var url: String
    /// host[:port], for messages.
    var host: String

    /// The endpoint of `cloud`: its `endpoint`, a URL or a bare host
    /// (`https://HOST/sdk`); a URL without a path gets `/sdk`. Plain HTTP
    /// is allowed only for a loopback endpoint (a test server such as
    /// govmomi's simulator).
    static func of(_ cloud: ProviderV1.CloudSpec) throws(RPCError) -> VSphereEndpoint {
        let given = cloud.endpoint.trimmingCharacters(in: .whitespaces)
        guard !given.isEmpty else {
            throw RPCError(.invalidArgument, "the vsphere cloud spec needs an endpoint, e.g. https://vcenter.example.com/sdk")
        }
        // Never echo an endpoint that may carry a password.
        let shown = given.contains("@") ? "(not shown: it holds an @)" : "\"\(VSphereSOAP.oneLine(given, limit: 200))\""
        let text = given.contains("://") ? given : "https://\(given)"
        guard var components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
              let host = components.host, !host.isEmpty
        else {
            throw RPCError(.invalidArgument, "the vsphere endpoint \(shown) is not a URL such as https://vcenter.example.com/sdk")
        }
        guard components.user == nil, components.password == nil else {
            throw RPCError(.invalidArgument, "the vsphere endpoint must not carry a user or password; they belong in the credential")
        }
        switch scheme {
        case "https":
            break
        case "http":
            let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            guard bare == "localhost" || bare == "::1" || bare.hasPrefix("127.") else {
                throw RPCError(.invalidArgument, "plain HTTP is allowed only for a loopback endpoint, not \(host); use https")
            }
        default:
            throw RPCError(.invalidArgument, "the vsphere endpoint must be https (or http on loopback), not \(scheme)")
        }
        components.scheme = scheme
        if components.path.isEmpty || components.path == "/" { components.path = "/sdk" }
        components.query = nil
        components.fragment = nil
        guard let url = components.url?.absoluteString else {
            throw RPCError(.invalidArgument, "the vsphere endpoint \(shown) is not a URL such as https://vcenter.example.com/sdk")
        }
        let hostShown = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return VSphereEndpoint(url: url, host: components.port.map { "\(hostShown):\($0)" } ?? hostShown)
    }
}

/// A vSphere user and password (credential auth type `userpass`). The
/// password never appears in a description, log or error.
struct VSphereCredentials: Sendable, CustomStringConvertible {
    var name: String
    var user: String
    var password: String

    var description: String { "vSphere user \(user)" }

    /// A stable, one-way key of the user, password and endpoint: the
    /// session and validation caches are keyed by it.
    func fingerprint(_ endpoint: VSphereEndpoint) -> String {
        let material = [user, password, endpoint.url].joined(separator: "\u{0}")
        return SHA256.hash(data: Data(material.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}

/// The vSphere Web Services API (SOAP 1.1, `urn:vim25`) over
/// AsyncHTTPClient, with one session per credential (docs/DESIGN.md §7.3).
/// Errors come out as the provider contract's codes:
///
/// - InvalidLogin, PasswordExpired → Unauthenticated; NotAuthenticated →
///   one fresh login and a retry, then Unauthenticated;
/// - NoPermission → PermissionDenied;
/// - HTTP 429 → ResourceExhausted with `retry-after-ms`;
/// - 5xx without a SOAP fault, and connection errors → retried with
///   jittered backoff inside the call's deadline, then Unavailable;
/// - any other fault → FailedPrecondition with the fault's name and message.
///
/// Messages say what vSphere said; the password and the session cookie
/// never appear in one.
public final class VSphereClient: Sendable {
    public struct Settings: Sendable {
        /// Attempts per request for 5xx and connection errors.
        public var maxAttempts = 3
        /// First retry delay (full jitter, doubling).
        public var retryBase: Duration = .milliseconds(200)
        /// Bound of one call when the caller gives none.
        public var defaultTimeout: Duration = .seconds(30)
        /// The hint sent with ResourceExhausted on HTTP 429.
        public var throttleRetryAfter: Duration = .seconds(2)
        /// Bound of the clean-up requests (DestroyView,
        /// CancelRetrievePropertiesEx, Logout), which run even once the
        /// call that needed them is over.
        public var cleanupTimeout: Duration = .seconds(5)
        /// A session unused this long is dropped (vCenter's own idle
        /// timeout is 30 minutes by default).
        public var sessionIdle: Duration = .seconds(20 * 60)
        public init() {}
    }

    static let sessionCookieName = "vmware_soap_session"
    /// Largest answer read.
    static let maxAnswerBytes = 64 << 20

    private let http: CloudHTTPClient
    private let settings: Settings
    private let logger: Logger
    private let sessions = SessionPool()
    private let serviceContents = NIOLockedValueBox<[String: VSphereSOAP.ServiceContent]>([:])

    public init(http: CloudHTTPClient, settings: Settings = Settings(), logger: Logger) {
        self.http = http
        self.settings = settings
        self.logger = logger
    }

    /// One logged-in session: its cookie (`vmware_soap_session="…"`, sent
    /// back as is) and what the service content names.
    struct Session: Sendable {
        var id: Int
        var cookie: String
        var content: VSphereSOAP.ServiceContent
    }

    /// What one request needs besides its body.
    struct Target: Sendable {
        var endpoint: VSphereEndpoint
        var credentials: VSphereCredentials
        var deadline: ContinuousClock.Instant
    }

    func target(_ endpoint: VSphereEndpoint, _ credentials: VSphereCredentials, deadline: ContinuousClock.Instant?) -> Target {
        Target(endpoint: endpoint, credentials: credentials, deadline: deadline ?? .now + settings.defaultTimeout)
    }

    // MARK: - Sessions

    /// Runs `body` in the credential's session, logging in first when
    /// there is none; on NotAuthenticated (the session expired or was
    /// ended), logs in once more and runs `body` again.
    func withSession<T: Sendable>(_ target: Target, _ body: (Session) async throws -> T) async throws -> T {
        let key = target.credentials.fingerprint(target.endpoint)
        let session = try await sessions.session(key, idle: settings.sessionIdle) { try await self.login(target) }
        do {
            return try await body(session)
        } catch let lost as SessionLost {
            logger.debug("session no longer authenticated; logging in again", metadata: ["method": "\(lost.method)", "user": "\(target.credentials.user)"])
            await sessions.drop(key, id: session.id)
        }
        let fresh = try await sessions.session(key, idle: settings.sessionIdle) { try await self.login(target) }
        do {
            return try await body(fresh)
        } catch let lost as SessionLost {
            await sessions.drop(key, id: fresh.id)
            throw RPCError(.unauthenticated, "\(lost.method): vCenter at \(target.endpoint.host) does not take the session of a fresh login: \(lost.fault)")
        }
    }

    /// Checks the credential with a real login. The session is kept when
    /// the credential has none yet, else ended at once (calls in flight
    /// keep theirs).
    func verifyLogin(_ target: Target) async throws {
        let key = target.credentials.fingerprint(target.endpoint)
        let login = try await login(target)
        if await !sessions.adopt(key, login) {
            let session = login.session
            await cleanup(target) { target in
                _ = try await self.invoke("Logout", VSphereSOAP.envelope("Logout", this: session.content.sessionManager), target, cookie: session.cookie) {
                    body throws(VSphereAnswerError) in try VSphereSOAP.parseEmpty(body, "Logout")
                }
            }
        }
    }

    /// Ends every session (at shutdown), side by side, within the clean-up
    /// bound: a vCenter that does not answer ends them at its idle timeout.
    public func logoutAll() async {
        let deadline = ContinuousClock.now + settings.cleanupTimeout
        await withTaskGroup(of: Void.self) { group in
            for (endpoint, session) in await sessions.removeAll() {
                let target = Target(endpoint: endpoint, credentials: VSphereCredentials(name: "", user: "", password: ""), deadline: deadline)
                group.addTask {
                    _ = try? await self.invoke("Logout", VSphereSOAP.envelope("Logout", this: session.content.sessionManager), target, cookie: session.cookie) {
                        body throws(VSphereAnswerError) in try VSphereSOAP.parseEmpty(body, "Logout")
                    }
                }
            }
        }
    }

    private func login(_ target: Target) async throws -> (endpoint: VSphereEndpoint, session: Session) {
        let content = try await serviceContent(target)
        let credentials = target.credentials
        let body = VSphereSOAP.envelope(
            "Login", this: content.sessionManager,
            VSphereSOAP.element("userName", credentials.user) + VSphereSOAP.element("password", credentials.password)
        )
        let answer = try await post("Login", body, target, cookie: nil)
        do {
            try VSphereSOAP.parseLogin(answer.body)
        } catch {
            throw mapAnswerError(error, method: "Login", status: answer.status, target)
        }
        guard let cookie = answer.cookie else {
            throw RPCError(.unavailable, "Login: vCenter at \(target.endpoint.host) answered without a session cookie")
        }
        logger.debug("logged in", metadata: ["user": "\(credentials.user)", "endpoint": "\(target.endpoint.host)"])
        return (target.endpoint, Session(id: 0, cookie: cookie, content: content))
    }

    /// The service content of the endpoint (RetrieveServiceContent needs no
    /// session), asked once per endpoint.
    private func serviceContent(_ target: Target) async throws -> VSphereSOAP.ServiceContent {
        if let known = serviceContents.withLockedValue({ $0[target.endpoint.url] }) { return known }
        let instance = VSphereMoRef(type: "ServiceInstance", value: "ServiceInstance")
        let content = try await invoke("RetrieveServiceContent", VSphereSOAP.envelope("RetrieveServiceContent", this: instance), target, cookie: nil) {
            body throws(VSphereAnswerError) in try VSphereSOAP.parseServiceContent(body)
        }
        serviceContents.withLockedValue { $0[target.endpoint.url] = content }
        return content
    }

    // MARK: - Calls in a session

    /// Calls `method` in `session` and reads the answer with `parse`.
    func call<T>(
        _ method: String, _ inner: String, this: VSphereMoRef, _ target: Target, _ session: Session,
        _ parse: ([UInt8]) throws(VSphereAnswerError) -> T
    ) async throws -> T {
        try await invoke(method, VSphereSOAP.envelope(method, this: this, inner), target, cookie: session.cookie, parse)
    }

    /// The managed object at an inventory path, or nil (`SearchIndex.FindByInventoryPath`).
    func find(_ path: String, _ target: Target, _ session: Session) async throws -> VSphereMoRef? {
        try await call("FindByInventoryPath", VSphereSOAP.element("inventoryPath", path), this: session.content.searchIndex, target, session) {
            body throws(VSphereAnswerError) in try VSphereSOAP.parseMoRefAnswer(body, "FindByInventoryPath")
        }
    }

    /// The properties of the virtual machines under `container`
    /// (recursively): one container view, one RetrievePropertiesEx and its
    /// continuations, then the view destroyed, whatever happened.
    func machines(under container: VSphereMoRef, properties: [String], pageSize: Int, _ target: Target, _ session: Session) async throws
        -> [VSphereVirtualMachine]
    {
        let content = session.content
        let inner = VSphereSOAP.ref("container", container) + VSphereSOAP.element("type", "VirtualMachine") + VSphereSOAP.element("recursive", "true")
        guard let view = try await call("CreateContainerView", inner, this: content.viewManager, target, session, { body throws(VSphereAnswerError) in
            try VSphereSOAP.parseMoRefAnswer(body, "CreateContainerView")
        }) else {
            throw RPCError(.unavailable, "CreateContainerView: vCenter at \(target.endpoint.host) answered no view")
        }
        do {
            let machines = try await retrieveAll(VSphereSOAP.retrieveSpec(properties: properties, view: view, maxObjects: pageSize), target, session)
            await destroy(view, target, session)
            return machines
        } catch {
            await destroy(view, target, session)
            throw error
        }
    }

    /// The properties of the given machines (a machine gone since is left out).
    func machines(_ refs: [VSphereMoRef], properties: [String], pageSize: Int, _ target: Target, _ session: Session) async throws
        -> [VSphereVirtualMachine]
    {
        guard !refs.isEmpty else { return [] }
        return try await retrieveAll(VSphereSOAP.retrieveSpec(properties: properties, view: nil, objects: refs, maxObjects: pageSize), target, session)
    }

    /// Most pages one retrieval follows (a server that keeps answering
    /// tokens must not hold a call forever).
    static let maxPages = 10_000

    /// RetrievePropertiesEx, then ContinueRetrievePropertiesEx while a token
    /// comes back. A token left unused (an error on the way) is cancelled.
    func retrieveAll(_ spec: String, _ target: Target, _ session: Session) async throws -> [VSphereVirtualMachine] {
        let collector = session.content.propertyCollector
        var page = try await call("RetrievePropertiesEx", spec, this: collector, target, session) { body throws(VSphereAnswerError) in
            try VSphereSOAP.parseRetrieveResult(body)
        }
        var machines = page.objects
        var pages = 1
        while let token = page.token {
            do {
                guard pages < Self.maxPages else {
                    throw RPCError(.unavailable, "RetrievePropertiesEx: vCenter at \(target.endpoint.host) kept answering more pages (\(pages))")
                }
                page = try await call("ContinueRetrievePropertiesEx", VSphereSOAP.element("token", token), this: collector, target, session) {
                    body throws(VSphereAnswerError) in try VSphereSOAP.parseRetrieveResult(body)
                }
                if page.token == token {
                    throw RPCError(.unavailable, "ContinueRetrievePropertiesEx: vCenter at \(target.endpoint.host) answered the same token again")
                }
            } catch {
                await cleanup(target) { target in
                    _ = try await self.call("CancelRetrievePropertiesEx", VSphereSOAP.element("token", token), this: collector, target, session) {
                        body throws(VSphereAnswerError) in try VSphereSOAP.parseEmpty(body, "CancelRetrievePropertiesEx")
                    }
                }
                throw error
            }
            pages += 1
            machines += page.objects
        }
        return machines
    }

    private func destroy(_ view: VSphereMoRef, _ target: Target, _ session: Session) async {
        await cleanup(target) { target in
            _ = try await self.call("DestroyView", "", this: view, target, session) { body throws(VSphereAnswerError) in
                try VSphereSOAP.parseEmpty(body, "DestroyView")
            }
        }
    }

    /// Runs a clean-up request outside the caller's task (it runs even when
    /// the call was cancelled at its deadline), within its own bound;
    /// a failure is logged, not thrown.
    private func cleanup(_ target: Target, _ request: @escaping @Sendable (Target) async throws -> Void) async {
        var bounded = target
        bounded.deadline = .now + settings.cleanupTimeout
        let logger = self.logger
        await Task.detached {
            do {
                try await request(bounded)
            } catch let lost as SessionLost {
                // The session is gone, and what it held with it.
                logger.debug("a clean-up request found the session gone", metadata: ["method": "\(lost.method)"])
            } catch {
                logger.warning("a clean-up request failed", metadata: ["error": "\(error)"])
            }
        }.value
    }

    // MARK: - Requests

    /// A session that vSphere no longer takes (fault NotAuthenticated).
    struct SessionLost: Error {
        var method: String
        var fault: VSphereFault
    }

    /// Posts `body`, then reads the answer with `parse`; faults and
    /// unreadable answers become the contract's errors.
    func invoke<T>(
        _ method: String, _ body: [UInt8], _ target: Target, cookie: String?,
        _ parse: ([UInt8]) throws(VSphereAnswerError) -> T
    ) async throws -> T {
        let answer = try await post(method, body, target, cookie: cookie)
        do {
            return try parse(answer.body)
        } catch {
            if case .fault(let fault) = error, fault.name == "NotAuthenticated", cookie != nil {
                throw SessionLost(method: method, fault: scrubbed(fault, target))
            }
            throw mapAnswerError(error, method: method, status: answer.status, target)
        }
    }

    /// The contract's error for an answer that is a fault or unreadable.
    func mapAnswerError(_ error: VSphereAnswerError, method: String, status: Int, _ target: Target) -> RPCError {
        let host = target.endpoint.host
        switch error {
        case .fault(let fault):
            return Self.mapFault(scrubbed(fault, target), method: method, host: host, user: target.credentials.user)
        case .notXML, .notSOAP, .malformed:
            let said = scrub(error.description, target)
            if (200..<300).contains(status) || status == 500 {
                return RPCError(.unavailable, "\(method): vCenter at \(host) answered HTTP \(status) that cannot be read (\(said))")
            }
            return RPCError(.failedPrecondition, "\(method): \(host) answered HTTP \(status), not SOAP; is the endpoint vCenter's SDK, e.g. https://vcenter.example.com/sdk?")
        }
    }

    static let unauthenticated: Set<String> = ["InvalidLogin", "PasswordExpired", "NotAuthenticated"]
    static let permissionDenied: Set<String> = ["NoPermission"]

    static func mapFault(_ fault: VSphereFault, method: String, host: String, user: String) -> RPCError {
        if unauthenticated.contains(fault.name) {
            let who = method == "Login" && !user.isEmpty ? " user \(user)" : ""
            return RPCError(.unauthenticated, "\(method): vCenter at \(host) refused\(who): \(fault)")
        }
        if permissionDenied.contains(fault.name) {
            return RPCError(.permissionDenied, "\(method): vCenter at \(host) denied permission: \(fault)")
        }
        return RPCError(.failedPrecondition, "\(method): vCenter at \(host) answered fault \(fault)")
    }

    /// One posted request's answer: its status, body and session cookie.
    struct Answer: Sendable {
        var status: Int
        var body: [UInt8]
        var cookie: String?
    }

    /// A failure worth another attempt (5xx without a fault, connection).
    private struct Retryable: Error {
        var error: RPCError
    }

    /// Posts `body` with retries for 5xx and connection errors.
    func post(_ method: String, _ body: [UInt8], _ target: Target, cookie: String?) async throws -> Answer {
        var attempt = 0
        while true {
            attempt += 1
            let failure: RPCError
            // Attempts share 90 % of the time left, so that the last failure
            // is reported (with its cause) before the caller's deadline.
            let left = target.deadline - .now
            let attemptDeadline = ContinuousClock.now + (left * 0.9) / (settings.maxAttempts - attempt + 1)
            do {
                return try await once(method, body, target, cookie: cookie, deadline: attemptDeadline)
            } catch let error as Retryable {
                failure = error.error
            }
            let backoff = Duration.milliseconds(Int64.random(in: 0...(settings.retryBase.milliseconds << (attempt - 1))))
            guard attempt < settings.maxAttempts, ContinuousClock.now + backoff < target.deadline else { throw failure }
            logger.debug("retrying", metadata: ["method": "\(method)", "attempt": "\(attempt + 1)", "after": "\(backoff)", "error": "\(failure)"])
            try await Task.sleep(for: backoff)
        }
    }

    private func once(_ method: String, _ body: [UInt8], _ target: Target, cookie: String?, deadline: ContinuousClock.Instant) async throws -> Answer {
        let host = target.endpoint.host
        var request = HTTPClientRequest(url: target.endpoint.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "text/xml; charset=utf-8")
        request.headers.add(name: "SOAPAction", value: "urn:vim25/\(VSphereSOAP.apiVersion)")
        request.headers.add(name: "User-Agent", value: "instancepoller-vsphere/\(ProductVersion.current)")
        if let cookie { request.headers.add(name: "Cookie", value: "\(Self.sessionCookieName)=\(cookie)") }
        request.body = .bytes(ByteBuffer(bytes: body))
        let left = deadline - .now
        guard left > .zero else { throw RPCError(.deadlineExceeded, "\(method): no time left for vCenter at \(host)") }
        let response: HTTPClientResponse
        let data: ByteBuffer
        do {
            response = try await http.execute(request, timeout: .nanoseconds(left.totalNanoseconds))
            data = try await response.body.collect(upTo: Self.maxAnswerBytes)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw Retryable(error: RPCError(.unavailable, "\(method): cannot reach vCenter at \(host): \(scrub("\(error)", target, cookie: cookie))"))
        }
        let status = Int(response.status.code)
        let bytes = Array(data.readableBytesView)
        let sessionCookie = response.headers["Set-Cookie"].lazy.compactMap(Self.sessionCookie).first
        if status == 429 {
            throw RPCError(
                .resourceExhausted, "\(method): vCenter at \(host) is throttling (HTTP 429)",
                metadata: [(RPCError.retryAfterKey, "\(settings.throttleRetryAfter.milliseconds)")]
            )
        }
        if status >= 500, (try? VSphereSOAP.parseFault(bytes)) == nil {
            throw Retryable(error: RPCError(.unavailable, "\(method): vCenter at \(host) is unavailable (HTTP \(status))"))
        }
        return Answer(status: status, body: bytes, cookie: sessionCookie)
    }

    /// The session cookie's value in a Set-Cookie header, quotes kept.
    static func sessionCookie(_ header: String) -> String? {
        let prefix = "\(sessionCookieName)="
        guard let start = header.range(of: prefix), header[..<start.lowerBound].allSatisfy({ $0 == " " }) else { return nil }
        let value = header[start.upperBound...].prefix { $0 != ";" }.trimmingCharacters(in: .whitespaces)
        return value.isEmpty ? nil : value
    }

    private func scrubbed(_ fault: VSphereFault, _ target: Target) -> VSphereFault {
        VSphereFault(name: scrub(fault.name, target), message: scrub(fault.message, target))
    }

    /// Removes the password from `text`.
    func scrub(_ text: String, _ target: Target) -> String {
        Self.scrub(text, secrets: [target.credentials.password])
    }

    /// Removes the password and the session cookie from `text`.
    func scrub(_ text: String, _ target: Target, cookie: String?) -> String {
        Self.scrub(text, secrets: [target.credentials.password, cookie ?? ""])
    }

    static func scrub(_ text: String, secrets: [String]) -> String {
        var text = text
        for secret in secrets where secret.count >= 4 {
            text = text.replacingOccurrences(of: secret, with: "[secret]")
        }
        return text
    }
}

/// One session per credential fingerprint, logins coalesced: callers that
/// find a login under way wait for it instead of logging in again.
actor SessionPool {
    private enum Entry {
        case pending(id: Int, Task<(endpoint: VSphereEndpoint, session: VSphereClient.Session), any Error>)
        case ready(endpoint: VSphereEndpoint, session: VSphereClient.Session, lastUsed: ContinuousClock.Instant)
    }

    private var entries: [String: Entry] = [:]
    private var nextID = 1

    /// The session of `key`, logging in with `login` when there is none.
    func session(
        _ key: String, idle: Duration,
        login: @escaping @Sendable () async throws -> (endpoint: VSphereEndpoint, session: VSphereClient.Session)
    ) async throws -> VSphereClient.Session {
        sweep(idle: idle)
        switch entries[key] {
        case .ready(let endpoint, let session, _):
            entries[key] = .ready(endpoint: endpoint, session: session, lastUsed: .now)
            return session
        case .pending(_, let task):
            return try await task.value.session
        case nil:
            let id = nextID
            nextID += 1
            let task = Task {
                var login = try await login()
                login.session.id = id
                return login
            }
            entries[key] = .pending(id: id, task)
            do {
                let (endpoint, session) = try await task.value
                if case .pending(let pending, _) = entries[key], pending == id {
                    entries[key] = .ready(endpoint: endpoint, session: session, lastUsed: .now)
                }
                return session
            } catch {
                if case .pending(let pending, _) = entries[key], pending == id { entries[key] = nil }
                throw error
            }
        }
    }

    /// Forgets session `id` of `key` (no longer authenticated), unless it
    /// was replaced already.
    func drop(_ key: String, id: Int) {
        if case .ready(_, let session, _) = entries[key], session.id == id { entries[key] = nil }
    }

    /// Keeps `login`'s session for `key` when `key` has none; false when it
    /// has one (the caller ends the new one).
    func adopt(_ key: String, _ login: (endpoint: VSphereEndpoint, session: VSphereClient.Session)) -> Bool {
        guard entries[key] == nil else { return false }
        var session = login.session
        session.id = nextID
        nextID += 1
        entries[key] = .ready(endpoint: login.endpoint, session: session, lastUsed: .now)
        return true
    }

    /// Every ready session, forgotten.
    func removeAll() -> [(VSphereEndpoint, VSphereClient.Session)] {
        defer { entries = [:] }
        return entries.values.compactMap {
            if case .ready(let endpoint, let session, _) = $0 { return (endpoint, session) }
            return nil
        }
    }

    private func sweep(idle: Duration) {
        let now = ContinuousClock.now
        entries = entries.filter { _, entry in
            if case .ready(_, _, let lastUsed) = entry { return now - lastUsed < idle }
            return true
        }
    }
}

extension Duration {
    var milliseconds: Int64 { totalNanoseconds / 1_000_000 }
}
