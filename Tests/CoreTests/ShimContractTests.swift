import Core
import Testing

/// The handshake line as written and as checked, against the literal the
/// contract fixes (proto/PROTOCOL.md): a change to the constants fails here.
@Suite("Shim contract")
struct ShimContractTests {
    @Test func theLineAndTheSocketVariableAreTheContractsLiterals() {
        #expect(ShimContract.handshakeLine(socketPath: "/run/ip/a.sock") == "instancepoller-shim|1|unix|/run/ip/a.sock|ttrpc")
        #expect(ShimContract.socketVariable == "INSTANCEPOLLER_SOCKET")
        #expect(ShimContract.checkHandshakeLine("instancepoller-shim|1|unix|/run/ip/a.sock|ttrpc", socketPath: "/run/ip/a.sock") == nil)
    }

    @Test func aPathWithABarIsReadWhole() {
        let path = "/tmp/odd|dir/a.sock"
        #expect(ShimContract.checkHandshakeLine(ShimContract.handshakeLine(socketPath: path), socketPath: path) == nil)
    }

    @Test(arguments: [
        ("hello", "1 fields, expected 5"),
        ("other-shim|1|unix|/s|ttrpc", "it must start with \"instancepoller-shim\""),
        ("instancepoller-shim|2|unix|/s|ttrpc", "handshake version \"2\", this controller speaks 1"),
        ("instancepoller-shim|1|tcp|/s|ttrpc", "network \"tcp\", only \"unix\" is supported"),
        ("instancepoller-shim|1|unix|/s|grpc", "protocol \"grpc\", only \"ttrpc\" is supported"),
        ("instancepoller-shim|1|unix|/elsewhere|ttrpc", "socket /elsewhere, but the shim was given /s"),
    ])
    func aWrongLineSaysWhatIsWrong(line: String, problem: String) throws {
        let error = try #require(ShimContract.checkHandshakeLine(line, socketPath: "/s"))
        #expect(error.description.hasPrefix("bad handshake line \"\(line)\": \(problem)"))
    }
}
