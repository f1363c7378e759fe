// ttrpc-echo-server serves instancepoller.testing.v1.Echo with containerd's
// Go ttrpc (Debian golang-github-containerd-ttrpc-dev 1.1.1), for interop
// tests and scripts/bench-rpc. Built by ../build.sh.
//
//	ttrpc-echo-server -socket PATH
//
// Serves as ../serveunix says: stale socket removed, socket 0600, "ready"
// on stdout, until SIGTERM/SIGINT or EOF on stdin.
package main

import (
	"context"
	"sort"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	serveunix "instancepoller-fixtures/serveunix"
	testingv1 "instancepoller/testing/v1"
)

const serviceName = "instancepoller.testing.v1.Echo"

// echo implements the Echo semantics shared with the Swift server:
// optional delay (cut short by the call context), then the requested
// failure, else payload + received metadata + remaining time.
func echo(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
	var req testingv1.EchoRequest
	if err := unmarshal(&req); err != nil {
		return nil, err
	}

	if req.DelayNano > 0 {
		timer := time.NewTimer(time.Duration(req.DelayNano))
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			if ctx.Err() == context.DeadlineExceeded {
				return nil, status.Error(codes.DeadlineExceeded, "deadline exceeded while delaying")
			}
			return nil, status.Error(codes.Canceled, "call cancelled while delaying")
		}
	}

	if req.FailCode != 0 {
		return nil, status.Error(codes.Code(req.FailCode), req.FailMessage)
	}

	resp := &testingv1.EchoResponse{Payload: req.Payload}
	if md, ok := ttrpc.GetMetadata(ctx); ok {
		// MD is a map: the order across keys is lost, so emit keys sorted;
		// values keep their order per key.
		keys := make([]string, 0, len(md))
		for k := range md {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			for _, v := range md[k] {
				resp.Metadata = append(resp.Metadata, &testingv1.MetadataEntry{Key: k, Value: v})
			}
		}
	}
	if deadline, ok := ctx.Deadline(); ok {
		resp.TimeoutNano = int64(time.Until(deadline))
	}
	return resp, nil
}

func main() {
	serveunix.Main("ttrpc-echo-server", func(server *ttrpc.Server) {
		server.Register(serviceName, map[string]ttrpc.Method{"Echo": echo})
	})
}
