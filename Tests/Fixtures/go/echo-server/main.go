// ttrpc-echo-server serves instancepoller.testing.v1.Echo with containerd's
// Go ttrpc (Debian golang-github-containerd-ttrpc-dev 1.1.1), for interop
// tests and scripts/bench-rpc. Built by ../build.sh.
//
//	ttrpc-echo-server -socket PATH
//
// Removes a stale socket file, listens, chmods the socket 0600, prints
// "ready" on stdout, and serves until SIGTERM/SIGINT or EOF on stdin.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	socket := flag.String("socket", "", "unix socket path to listen on")
	flag.Parse()
	if *socket == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: ttrpc-echo-server -socket PATH")
		os.Exit(2)
	}

	if err := os.Remove(*socket); err != nil && !os.IsNotExist(err) {
		fmt.Fprintf(os.Stderr, "ttrpc-echo-server: removing stale socket: %v\n", err)
		os.Exit(1)
	}

	server, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-echo-server: %v\n", err)
		os.Exit(1)
	}
	server.Register(serviceName, map[string]ttrpc.Method{"Echo": echo})

	listener, err := net.Listen("unix", *socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-echo-server: listen: %v\n", err)
		os.Exit(1)
	}
	// Remove the socket file ourselves on exit, not on listener close.
	listener.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(*socket, 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-echo-server: chmod: %v\n", err)
		os.Exit(1)
	}

	stop := make(chan string, 3)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() { stop <- (<-signals).String() }()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop <- "stdin EOF"
	}()
	go func() {
		err := server.Serve(context.Background(), listener)
		if err != nil && err != ttrpc.ErrServerClosed {
			fmt.Fprintf(os.Stderr, "ttrpc-echo-server: serve: %v\n", err)
			stop <- "serve error"
		}
	}()

	// os.Stdout is unbuffered in Go: this write is the flush.
	if _, err := os.Stdout.WriteString("ready\n"); err != nil {
		os.Exit(1)
	}

	reason := <-stop
	_ = server.Close()
	_ = os.Remove(*socket)
	if reason == "serve error" {
		os.Exit(1)
	}
	os.Exit(0)
}
