// ttrpc-provider-server serves instancepoller.provider.v1.Provider's Health
// with containerd's Go ttrpc (Debian golang-github-containerd-ttrpc-dev
// 1.1.1): the Go side of scripts/bench-rpc's Health comparison, against a
// Swift shim. Built by ../build.sh.
//
//	ttrpc-provider-server -socket PATH
//
// Health answers SERVING_STATUS_SERVING; the other methods are not served
// (ttrpc answers them Unimplemented). Serves as ../serveunix says: socket
// 0600, "ready" on stdout, until SIGTERM/SIGINT or EOF on stdin.
package main

import (
	"context"

	"github.com/containerd/ttrpc"

	serveunix "instancepoller-fixtures/serveunix"
	providerv1 "instancepoller/provider/v1"
)

const serviceName = "instancepoller.provider.v1.Provider"

func health(_ context.Context, unmarshal func(interface{}) error) (interface{}, error) {
	var req providerv1.HealthRequest
	if err := unmarshal(&req); err != nil {
		return nil, err
	}
	return &providerv1.HealthResponse{Status: providerv1.HealthResponse_SERVING_STATUS_SERVING}, nil
}

func main() {
	serveunix.Main("ttrpc-provider-server", func(server *ttrpc.Server) {
		server.Register(serviceName, map[string]ttrpc.Method{"Health": health})
	})
}
