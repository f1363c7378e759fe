internal import Core
internal import Logging
internal import PostgresNIO

/// Credentials. Their attributes are secrets: never in an error or a log,
/// and sealed at rest when a sealer is given (docs/DESIGN.md §8).
extension PostgresMachineStore {
    public func credential(provider: String, name: String) async throws -> StoredCredential? {
        let sealer = self.sealer
        return try await withConnection("reading credential \(provider)/\(name)") { connection in
            try await connection.values(
                "SELECT \(unescaped: Self.credentialColumns) FROM credentials WHERE provider = \(provider) AND name = \(name)",
                { try Self.credential(from: $0, sealer: sealer) }
            ).first
        }
    }

    public func credentials() async throws -> [StoredCredential] {
        let sealer = self.sealer
        return try await withConnection("reading credentials") { connection in
            try await connection.values(
                "SELECT \(unescaped: Self.credentialColumns) FROM credentials ORDER BY provider, name", { try Self.credential(from: $0, sealer: sealer) })
        }
    }

    public func setCredential(_ credential: StoredCredential) async throws {
        let now = clock.now
        let label = "\(credential.provider)/\(credential.name)"
        let attributes = try StoredValues.stored(credential.attributes, credential: label, sealer: sealer)
        try await transaction("setting credential \(label)") { connection in
            try await connection.execute("""
                INSERT INTO credentials (provider, name, auth_type, attributes, expires_at, invalid_reason)
                VALUES (\(credential.provider), \(credential.name), \(credential.authType), \(attributes),
                    \(credential.expiresAt?.nanosecondsSinceEpoch), NULL)
                ON CONFLICT (provider, name) DO UPDATE SET
                    auth_type = EXCLUDED.auth_type, attributes = EXCLUDED.attributes,
                    expires_at = EXCLUDED.expires_at, invalid_reason = NULL
                """)
            _ = try await Self.append([MachineEvent(revision: 0, kind: .credentialSet, source: .external, credential: label, at: now)], on: connection)
        }
        logger.debug("credential set", metadata: ["credential": "\(label)"])
        didChange()
    }

    public func invalidateCredential(provider: String, name: String, reason: String) async throws {
        let now = clock.now
        let label = "\(provider)/\(name)"
        try await transaction("invalidating credential \(label)") { connection in
            let updated = try await connection.rows(
                "UPDATE credentials SET invalid_reason = \(reason) WHERE provider = \(provider) AND name = \(name) RETURNING 1")
            if updated.isEmpty { throw StoreError.noCredential(provider: provider, name: name) }
            _ = try await Self.append(
                [MachineEvent(revision: 0, kind: .credentialInvalidated, source: .poller, credential: label, at: now)], on: connection)
        }
        logger.debug("credential invalidated", metadata: ["credential": "\(label)", "reason": "\(reason)"])
        didChange()
    }

    @discardableResult
    public func clearCredentialInvalid(provider: String, name: String, source: MachineEvent.Source) async throws -> Bool {
        let now = clock.now
        let label = "\(provider)/\(name)"
        let cleared = try await transaction("clearing the invalid mark of credential \(label)") { connection -> Bool in
            let rows = try await connection.values(
                "SELECT invalid_reason FROM credentials WHERE provider = \(provider) AND name = \(name) FOR UPDATE", { try $0.at(0, as: String?.self) })
            guard let row = rows.first else { throw StoreError.noCredential(provider: provider, name: name) }
            guard let reason = row else { return false }
            try await connection.execute("UPDATE credentials SET invalid_reason = NULL WHERE provider = \(provider) AND name = \(name)")
            _ = try await Self.append(
                [MachineEvent(revision: 0, kind: .credentialValidated, source: source, credential: label, at: now, oldValue: reason)],
                on: connection)
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
        try await transaction("removing credential \(label)") { connection in
            let removed = try await connection.rows("DELETE FROM credentials WHERE provider = \(provider) AND name = \(name) RETURNING 1")
            if removed.isEmpty { throw StoreError.noCredential(provider: provider, name: name) }
            let users = try await Self.count(connection, "SELECT count(*) FROM machines WHERE provider = \(provider) AND credential = \(name)")
            _ = try await Self.append(
                [
                    MachineEvent(
                        revision: 0, kind: .credentialRemoved, source: .external, credential: label, at: now,
                        newValue: users == 0 ? "" : "\(users) machines")
                ], on: connection)
        }
        logger.debug("credential removed", metadata: ["credential": "\(label)"])
        didChange()
    }

    @discardableResult
    public func resealCredentials() async throws -> Int {
        guard let sealer else {
            throw StoreError(.failedPrecondition, "no credential_key_file is configured: there is no key to seal credentials with")
        }
        return try await transaction("resealing credentials") { connection -> Int in
            var resealed = 0
            let rows = try await connection.values("SELECT provider, name, attributes FROM credentials ORDER BY provider, name FOR UPDATE") {
                row -> (String, String, String) in (try row.at(0), try row.at(1), try row.at(2))
            }
            for (provider, name, text) in rows where !sealer.isCurrent(text) {
                let label = "\(provider)/\(name)"
                let sealed = try StoredValues.stored(try StoredValues.attributes(text, credential: label, sealer: sealer), credential: label, sealer: sealer)
                try await connection.execute(
                    "UPDATE credentials SET attributes = \(sealed) WHERE provider = \(provider) AND name = \(name)")
                resealed += 1
            }
            return resealed
        }
    }

    public func credentialUse(provider: String) async throws -> [String: Int] {
        try await withConnection("counting the credentials of provider \(provider)'s machines") { connection in
            var use: [String: Int] = [:]
            for (name, count) in try await connection.values(
                "SELECT credential, count(*) FROM machines WHERE provider = \(provider) GROUP BY credential",
                { row -> (String, Int) in (try row.at(0), try row.at(1)) })
            {
                use[name] = count
            }
            return use
        }
    }

    static let credentialColumns = "provider, name, auth_type, attributes, expires_at, invalid_reason"

    private static func credential(from row: PostgresRandomAccessRow, sealer: CredentialSealer?) throws -> StoredCredential {
        let provider: String = try row.at(0)
        let name: String = try row.at(1)
        return StoredCredential(
            provider: provider,
            name: name,
            authType: try row.at(2),
            attributes: try StoredValues.attributes(try row.at(3), credential: "\(provider)/\(name)", sealer: sealer),
            expiresAt: (try row.at(4, as: Int64?.self)).map(Timestamp.init(nanosecondsSinceEpoch:)),
            invalidReason: try row.at(5))
    }
}
