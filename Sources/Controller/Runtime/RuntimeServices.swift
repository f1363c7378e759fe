internal import Core
internal import ServiceLifecycle

/// An ``RPCServer`` as a service: serves until the group shuts down, then
/// stops accepting, lets the calls in flight finish within the drain, and
/// closes its connections (cancelled: closes at once).
struct RPCServerService: Service {
    let server: RPCServer
    let drainTimeout: Duration

    func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await server.run() }
            try? await gracefulShutdown()
            await server.shutdown(drainTimeout: drainTimeout)
        }
    }
}
