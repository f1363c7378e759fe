// Package serveunix is the process around the Go ttrpc fixture servers:
//
//	NAME -socket PATH
//
// Removes a stale socket file, listens, chmods the socket 0600, prints
// "ready" on stdout, and serves until SIGTERM/SIGINT or EOF on stdin; the
// peer must be this user (ttrpc.UnixSocketRequireSameUser).
package serveunix

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/containerd/ttrpc"
)

// Main runs the server named name (for messages) with the services that
// register adds, and exits the process.
func Main(name string, register func(*ttrpc.Server)) {
	socket := flag.String("socket", "", "unix socket path to listen on")
	flag.Parse()
	if *socket == "" || flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "usage: %s -socket PATH\n", name)
		os.Exit(2)
	}

	if err := os.Remove(*socket); err != nil && !os.IsNotExist(err) {
		fmt.Fprintf(os.Stderr, "%s: removing stale socket: %v\n", name, err)
		os.Exit(1)
	}

	server, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	register(server)

	listener, err := net.Listen("unix", *socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: listen: %v\n", name, err)
		os.Exit(1)
	}
	// Remove the socket file ourselves on exit, not on listener close.
	listener.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(*socket, 0o600); err != nil {
		fmt.Fprintf(os.Stderr, "%s: chmod: %v\n", name, err)
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
			fmt.Fprintf(os.Stderr, "%s: serve: %v\n", name, err)
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
