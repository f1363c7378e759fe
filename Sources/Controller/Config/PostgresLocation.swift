internal import Foundation

/// Where a shared PostgreSQL store is: the config's
/// `store: postgres://user@host:port/database?sslmode=…` (docs/DESIGN.md
/// §8). The URL never holds the password: it comes from
/// `store_password_file` (0600) or libpq's usual `PGPASSWORD` /
/// `PGPASSFILE` (`~/.pgpass`), and is never logged.
public struct PostgresLocation: Hashable, Sendable, CustomStringConvertible {
    public enum TLSMode: String, Hashable, Sendable, CaseIterable {
        /// Plain TCP (a loopback or private network).
        case disable
        /// TLS when the server offers it.
        case prefer
        /// TLS, with the server's certificate checked against the system's
        /// trust roots.
        case require
    }

    public var host: String
    public var port: Int
    public var user: String
    public var database: String
    public var tls: TLSMode
    /// `?host=/dir`: connect over the Unix socket in this directory
    /// (`.s.PGSQL.<port>`) instead of TCP.
    public var socketDirectory: String?

    public init(host: String, port: Int = 5432, user: String, database: String, tls: TLSMode = .prefer, socketDirectory: String? = nil) {
        self.host = host
        self.port = port
        self.user = user
        self.database = database
        self.tls = tls
        self.socketDirectory = socketDirectory
    }

    /// The URL again, without a password: what logs and `status` show.
    public var description: String {
        var text = "postgres://\(user)@\(host):\(port)/\(database)?sslmode=\(tls.rawValue)"
        if let socketDirectory { text += "&host=\(socketDirectory)" }
        return text
    }

    /// Whether `text` names a PostgreSQL store rather than a SQLite file.
    public static func isURL(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    /// Reads a `postgres://` URL; the error says what is wrong with it (and
    /// never repeats a password written in it).
    public static func parse(_ text: String) throws(ConfigProblem) -> PostgresLocation {
        guard isURL(text), let components = URLComponents(string: text) else {
            throw ConfigProblem("expected postgres://user@host:port/database?sslmode=disable|prefer|require")
        }
        if components.password != nil {
            throw ConfigProblem("the store URL holds a password; put it in store_password_file (mode 0600) or PGPASSWORD instead")
        }
        guard let user = components.user, !user.isEmpty else { throw ConfigProblem("the store URL names no user (postgres://USER@host/database)") }
        let database = String(components.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else {
            throw ConfigProblem("the store URL names no database (postgres://user@host/DATABASE)")
        }
        var location = PostgresLocation(host: components.host ?? "", port: components.port ?? 5432, user: user, database: database)
        guard (1...65535).contains(location.port) else { throw ConfigProblem("port \(location.port) is out of range") }
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                let value = item.value ?? ""
                guard let mode = TLSMode(rawValue: value) else {
                    throw ConfigProblem("sslmode \"\(value)\" is not one of \(TLSMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                location.tls = mode
            case "host":
                guard let directory = item.value, directory.hasPrefix("/") else {
                    throw ConfigProblem("host= in the query must be an absolute socket directory")
                }
                location.socketDirectory = directory
            default:
                throw ConfigProblem("unknown store URL parameter \"\(item.name)\" (known: sslmode, host)")
            }
        }
        if location.host.isEmpty && location.socketDirectory == nil {
            throw ConfigProblem("the store URL names no host (postgres://user@HOST:port/database)")
        }
        if location.host.isEmpty { location.host = "localhost" }
        return location
    }

    /// The password: from `passwordFile` (0600, this user's) when given,
    /// else `PGPASSWORD`, else the first matching line of `PGPASSFILE` or
    /// `~/.pgpass` (`host:port:database:user:password`, `*` matching
    /// anything; the file must be 0600 as libpq demands). nil when none is
    /// set (trust or peer authentication).
    public func password(passwordFile: String?, environment: [String: String]) throws(ConfigProblem) -> String? {
        if let passwordFile {
            let bytes: [UInt8]
            do {
                bytes = try SecretFile.contents(of: passwordFile, regularFileOnly: true)
            } catch {
                throw ConfigProblem("store_password_file: \(error)")
            }
            let text = String(decoding: bytes, as: UTF8.self)
            let line = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            guard !line.isEmpty else { throw ConfigProblem("store_password_file \(passwordFile) is empty") }
            return line
        }
        if let password = environment["PGPASSWORD"] { return password }
        let passFile = environment["PGPASSFILE"] ?? environment["HOME"].map { "\($0)/.pgpass" }
        guard let passFile, FileManager.default.fileExists(atPath: passFile) else { return nil }
        let content: [UInt8]
        do {
            content = try SecretFile.contents(of: passFile, regularFileOnly: true)
        } catch {
            throw ConfigProblem("password file: \(error)")
        }
        for line in String(decoding: content, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            let fields = Self.passFileFields(String(line))
            guard fields.count == 5 else { continue }
            let wanted = [socketDirectory == nil ? host : "localhost", "\(port)", database, user]
            if zip(fields.prefix(4), wanted).allSatisfy({ $0 == "*" || $0 == $1 }) { return fields[4] }
        }
        return nil
    }

    /// A `.pgpass` line's fields: `:` separates, `\` escapes.
    static func passFileFields(_ line: String) -> [String] {
        var fields: [String] = []
        var current = ""
        var escaped = false
        for character in line {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == ":" {
                fields.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        fields.append(current)
        return fields
    }
}

/// A config value that is wrong, said in one line (the reader adds where).
public struct ConfigProblem: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
