internal import Core
internal import Foundation
internal import GRDB
internal import Logging

/// Credentials. Their attributes are secrets: never in an error or a log.
extension SQLiteMachineStore {
    public func credential(provider: String, name: String) async throws -> StoredCredential? {
        try await read("reading credential \(provider)/\(name)") { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM credentials WHERE provider = ? AND name = ?", arguments: [provider, name]
            ).map { try Self.credential(from: $0, sealer: sealer) }
        }
    }

    public func credentials() async throws -> [StoredCredential] {
        try await read("reading credentials") { db in
            try Row.fetchAll(db, sql: "SELECT * FROM credentials ORDER BY provider, name").map { try Self.credential(from: $0, sealer: sealer) }
        }
    }

    public func setCredential(_ credential: StoredCredential) async throws {
        let now = clock.now
        let label = "\(credential.provider)/\(credential.name)"
        let attributes = try StoredValues.stored(credential.attributes, credential: label, sealer: sealer)
        try await write("setting credential \(label)") { db in
            try db.execute(
                sql: """
                    INSERT INTO credentials (provider, name, auth_type, attributes, expires_at, invalid_reason)
                    VALUES (?, ?, ?, ?, ?, NULL)
                    ON CONFLICT (provider, name) DO UPDATE SET
                        auth_type = excluded.auth_type, attributes = excluded.attributes,
                        expires_at = excluded.expires_at, invalid_reason = NULL
                    """,
                arguments: [
                    credential.provider, credential.name, credential.authType, attributes,
                    credential.expiresAt?.nanosecondsSinceEpoch,
                ])
            try Self.appendEvent(db, .credentialSet, .external, credential: label, at: now)
        }
        logger.debug("credential set", metadata: ["credential": "\(label)"])
        didChange()
    }

    public func invalidateCredential(provider: String, name: String, reason: String) async throws {
        let now = clock.now
        let label = "\(provider)/\(name)"
        try await write("invalidating credential \(label)") { db in
            try db.execute(
                sql: "UPDATE credentials SET invalid_reason = ? WHERE provider = ? AND name = ?",
                arguments: [reason, provider, name])
            if db.changesCount == 0 { throw StoreError.noCredential(provider: provider, name: name) }
            try Self.appendEvent(db, .credentialInvalidated, .poller, credential: label, at: now)
        }
        logger.debug("credential invalidated", metadata: ["credential": "\(label)", "reason": "\(reason)"])
        didChange()
    }

    @discardableResult
    public func clearCredentialInvalid(provider: String, name: String, source: MachineEvent.Source) async throws -> Bool {
        let now = clock.now
        let label = "\(provider)/\(name)"
        let cleared = try await write("clearing the invalid mark of credential \(label)") { db -> Bool in
            guard let row = try Row.fetchOne(
                db, sql: "SELECT invalid_reason FROM credentials WHERE provider = ? AND name = ?", arguments: [provider, name])
            else {
                throw StoreError.noCredential(provider: provider, name: name)
            }
            guard let reason = try row.decode(String?.self, forColumn: "invalid_reason") else { return false }
            try db.execute(
                sql: "UPDATE credentials SET invalid_reason = NULL WHERE provider = ? AND name = ?", arguments: [provider, name])
            try Self.appendEvent(db, .credentialValidated, source, credential: label, at: now, old: reason)
            return true
        }
        if cleared {
            logger.debug("credential invalid mark cleared", metadata: ["credential": "\(label)"])
            didChange()
        }
        return cleared
    }

    public func removeCredential(provider: String, name: String) async throws {
        let now = clock.now
        let label = "\(provider)/\(name)"
        try await write("removing credential \(label)") { db in
            try db.execute(sql: "DELETE FROM credentials WHERE provider = ? AND name = ?", arguments: [provider, name])
            if db.changesCount == 0 { throw StoreError.noCredential(provider: provider, name: name) }
            let users = try Int.fetchOne(
                db, sql: "SELECT count(*) FROM machines WHERE provider = ? AND credential = ?", arguments: [provider, name]) ?? 0
            try Self.appendEvent(db, .credentialRemoved, .external, credential: label, at: now, new: users == 0 ? "" : "\(users) machines")
        }
        logger.debug("credential removed", metadata: ["credential": "\(label)"])
        didChange()
    }

    @discardableResult
    public func resealCredentials() async throws -> Int {
        guard let sealer else {
            throw StoreError(.failedPrecondition, "no credential_key_file is configured: there is no key to seal credentials with")
        }
        return try await write("resealing credentials") { db -> Int in
            var resealed = 0
            let rows = try Row.fetchAll(db, sql: "SELECT provider, name, attributes FROM credentials")
            for row in rows {
                let provider: String = try row.decode(forColumn: "provider")
                let name: String = try row.decode(forColumn: "name")
                let text: String = try row.decode(forColumn: "attributes")
                if sealer.isCurrent(text) { continue }
                let label = "\(provider)/\(name)"
                let sealed = try StoredValues.stored(try StoredValues.attributes(text, credential: label, sealer: sealer), credential: label, sealer: sealer)
                try db.execute(
                    sql: "UPDATE credentials SET attributes = ? WHERE provider = ? AND name = ?", arguments: [sealed, provider, name])
                resealed += 1
            }
            return resealed
        }
    }

    private static func credential(from row: Row, sealer: CredentialSealer?) throws -> StoredCredential {
        let provider: String = try row.decode(forColumn: "provider")
        let name: String = try row.decode(forColumn: "name")
        let text: String = try row.decode(forColumn: "attributes")
        let expiresAt: Int64? = try row.decode(forColumn: "expires_at")
        return StoredCredential(
            provider: provider,
            name: name,
            authType: try row.decode(forColumn: "auth_type"),
            attributes: try StoredValues.attributes(text, credential: "\(provider)/\(name)", sealer: sealer),
            expiresAt: expiresAt.map(Timestamp.init(nanosecondsSinceEpoch:)),
            invalidReason: try row.decode(forColumn: "invalid_reason"))
    }
}
