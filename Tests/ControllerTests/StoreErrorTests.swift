import Core
import GRDB
import Testing

@testable import Controller

/// What a store failure means, as the control API answers it.
@Suite struct StoreErrorTests {
    static let codes: [(StoreError.Kind, RPCStatusCode)] = [
        (.notFound, .notFound), (.alreadyExists, .alreadyExists), (.unavailable, .unavailable),
        (.invalidArgument, .invalidArgument), (.failedPrecondition, .failedPrecondition), (.leaseLost, .failedPrecondition),
        (.internal, .internal),
    ]

    @Test func everyKindHasItsCode() {
        #expect(Set(Self.codes.map(\.0)) == Set(StoreError.Kind.allCases))
        for (kind, code) in Self.codes {
            let error = StoreError(kind, "what went wrong, and where")
            let rpc = RPCError(from: error)
            #expect(rpc == RPCError(code, "what went wrong, and where"), "\(kind)")
            #expect(rpc.cause as? StoreError == error, "the store's error is kept as the cause")
            #expect(rpc.code.isRetryable == (kind == .unavailable), "only a busy or failing database is worth a retry")
        }
    }

    @Test func theMessagesOfWhatIsMissingOrTakenAreTheControlAPIs() {
        #expect(StoreError.noMachine("m-1") == StoreError(.notFound, "no machine \"m-1\""))
        #expect(StoreError.machineExists("m\"1") == StoreError(.alreadyExists, "machine \"m\\\"1\" already exists"))
        #expect(StoreError.noCredential(provider: "aws", name: "prod") == StoreError(.notFound, "no credential aws/prod"))
    }

    @Test(arguments: [
        (ResultCode.SQLITE_BUSY, StoreError.Kind.unavailable), (.SQLITE_LOCKED, .unavailable), (.SQLITE_IOERR_WRITE, .unavailable),
        (.SQLITE_FULL, .unavailable), (.SQLITE_CONSTRAINT_UNIQUE, .alreadyExists), (.SQLITE_CONSTRAINT_PRIMARYKEY, .alreadyExists),
        (.SQLITE_CONSTRAINT_CHECK, .failedPrecondition), (.SQLITE_READONLY, .failedPrecondition), (.SQLITE_TOOBIG, .invalidArgument),
        (.SQLITE_CORRUPT, .internal), (.SQLITE_ERROR, .internal),
    ])
    func sqliteFailuresHaveTheirKind(code: ResultCode, kind: StoreError.Kind) {
        #expect(SQLiteMachineStore.kind(of: DatabaseError(resultCode: code)) == kind)
    }

    @Test func aFailureThatIsNotSQLitesIsInternal() {
        struct Other: Error {}
        #expect(SQLiteMachineStore.kind(of: Other()) == .internal)
    }
}
