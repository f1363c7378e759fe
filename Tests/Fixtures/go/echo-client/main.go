// ttrpc-echo-client calls instancepoller.testing.v1.Echo with containerd's
// Go ttrpc (Debian golang-github-containerd-ttrpc-dev 1.1.1) over one unix
// connection. Built by ../build.sh.
//
//	ttrpc-echo-client -socket PATH -mode interop
//	ttrpc-echo-client -socket PATH -mode bench [-payload N] [-concurrency C] [-duration S] [-warmup S]
//
// interop prints "PASS <name>" or "FAIL <name>: <detail>" per check and
// exits 1 if any failed. bench prints one JSON line.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	mathrand "math/rand"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	benchloop "instancepoller-fixtures/benchloop"
	testingv1 "instancepoller/testing/v1"
)

const (
	serviceName = "instancepoller.testing.v1.Echo"
	methodName  = "Echo"
)

func dial(socket string, opts ...ttrpc.ClientOpts) (*ttrpc.Client, error) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	return ttrpc.NewClient(conn, opts...), nil
}

func callEcho(ctx context.Context, client *ttrpc.Client, req *testingv1.EchoRequest) (*testingv1.EchoResponse, error) {
	var resp testingv1.EchoResponse
	if err := client.Call(ctx, serviceName, methodName, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func main() {
	socket := flag.String("socket", "", "unix socket path of the server")
	mode := flag.String("mode", "", "interop or bench")
	payload := flag.Int("payload", 64, "bench: payload bytes")
	concurrency := flag.Int("concurrency", 1, "bench: concurrent callers")
	duration := flag.Float64("duration", 5, "bench: measured seconds")
	warmup := flag.Float64("warmup", 1, "bench: unrecorded warmup seconds")
	flag.Parse()
	if *socket == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: ttrpc-echo-client -socket PATH -mode interop|bench [-payload N] [-concurrency C] [-duration S] [-warmup S]")
		os.Exit(2)
	}
	switch *mode {
	case "interop":
		os.Exit(interop(*socket))
	case "bench":
		if *payload < 0 || *concurrency < 1 || *duration <= 0 || *warmup < 0 {
			fmt.Fprintln(os.Stderr, "ttrpc-echo-client: need -payload >= 0, -concurrency >= 1, -duration > 0, -warmup >= 0")
			os.Exit(2)
		}
		os.Exit(bench(*socket, *payload, *concurrency, seconds(*duration), seconds(*warmup)))
	default:
		fmt.Fprintln(os.Stderr, "ttrpc-echo-client: -mode must be interop or bench")
		os.Exit(2)
	}
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// ---------------------------------------------------------------- interop

type check struct {
	name string
	run  func(client *ttrpc.Client, socket string) (note string, err error)
}

func interop(socket string) int {
	client, err := dial(socket)
	if err != nil {
		fmt.Printf("FAIL connect: %v\n", err)
		return 1
	}
	defer client.Close()

	checks := []check{
		{"echo", checkEcho},
		{"error-status", checkErrorStatus},
		{"deadline", checkDeadline},
		{"deadline-server", checkDeadlineServer},
		{"unimplemented", checkUnimplemented},
		{"concurrent", checkConcurrent},
		{"large", checkLarge},
	}
	failed := 0
	for _, c := range checks {
		note, err := c.run(client, socket)
		switch {
		case err != nil:
			failed++
			fmt.Printf("FAIL %s: %v\n", c.name, err)
		case note != "":
			fmt.Printf("PASS %s (%s)\n", c.name, note)
		default:
			fmt.Printf("PASS %s\n", c.name)
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func describe(err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("status code %d (%s) %q", st.Code(), st.Code(), st.Message())
	}
	return fmt.Sprintf("non-status error %T: %v", err, err)
}

func checkEcho(client *ttrpc.Client, _ string) (string, error) {
	const timeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	md := ttrpc.MD{}
	md.Set("k1", "v1", "v2")
	md.Set("k2", "v3")
	ctx = ttrpc.WithMetadata(ctx, md)

	payload := []byte("hello interop")
	resp, err := callEcho(ctx, client, &testingv1.EchoRequest{Payload: payload})
	if err != nil {
		return "", fmt.Errorf("call failed: %s", describe(err))
	}
	if !bytes.Equal(resp.Payload, payload) {
		return "", fmt.Errorf("payload %q, want %q", resp.Payload, payload)
	}
	got := map[string][]string{}
	var pairs []string
	for _, e := range resp.Metadata {
		got[e.Key] = append(got[e.Key], e.Value)
		pairs = append(pairs, e.Key+"="+e.Value)
	}
	if strings.Join(got["k1"], ",") != "v1,v2" || strings.Join(got["k2"], ",") != "v3" {
		return "", fmt.Errorf("metadata [%s], want k1=v1, k1=v2 (in order) and k2=v3", strings.Join(pairs, " "))
	}
	if resp.TimeoutNano <= 0 || resp.TimeoutNano > int64(timeout) {
		return "", fmt.Errorf("timeout_nano %d, want in (0, %d]", resp.TimeoutNano, int64(timeout))
	}
	return "", nil
}

func checkErrorStatus(client *ttrpc.Client, _ string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := callEcho(ctx, client, &testingv1.EchoRequest{FailCode: int32(codes.NotFound), FailMessage: "no such thing"})
	if err == nil {
		return "", errors.New("call succeeded, want status code 5")
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.NotFound || st.Message() != "no such thing" {
		return "", fmt.Errorf("got %s, want status code 5 (NotFound) \"no such thing\"", describe(err))
	}
	return "", nil
}

// checkDeadline: the client's context deadline is 300ms and the request
// carries timeout_nano ~300ms; whichever side notices first wins. With Go's
// client the local context almost always wins the race.
func checkDeadline(client *ttrpc.Client, _ string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := callEcho(ctx, client, &testingv1.EchoRequest{Payload: []byte("slow"), DelayNano: int64(30 * time.Second)})
	elapsed := time.Since(start)
	if err == nil {
		return "", fmt.Errorf("call succeeded after %v, want DeadlineExceeded", elapsed)
	}
	var source string
	if st, ok := status.FromError(err); ok {
		if st.Code() != codes.DeadlineExceeded {
			return "", fmt.Errorf("got %s after %v, want code 4 DeadlineExceeded", describe(err), elapsed)
		}
		source = "server status 4"
	} else if errors.Is(err, context.DeadlineExceeded) {
		source = "client context deadline, mapped to code 4"
	} else {
		return "", fmt.Errorf("got %s after %v, want code 4 DeadlineExceeded", describe(err), elapsed)
	}
	if elapsed >= 3*time.Second {
		return "", fmt.Errorf("%s but only after %v, want < 3s", source, elapsed)
	}
	return fmt.Sprintf("%s after %v", source, elapsed.Round(time.Millisecond)), nil
}

// checkDeadlineServer isolates the server's side: a second client whose
// interceptor sends timeout_nano = 300ms while the local context allows 5s,
// so only the server's own deadline handling can end the call in time.
func checkDeadlineServer(_ *ttrpc.Client, socket string) (string, error) {
	const serverTimeout = 300 * time.Millisecond
	shorten := func(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, _ *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
		req.TimeoutNano = int64(serverTimeout)
		return invoke(ctx, req, resp)
	}
	client, err := dial(socket, ttrpc.WithUnaryClientInterceptor(shorten))
	if err != nil {
		return "", fmt.Errorf("second connection: %v", err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err = callEcho(ctx, client, &testingv1.EchoRequest{Payload: []byte("slow"), DelayNano: int64(30 * time.Second)})
	elapsed := time.Since(start)
	if err == nil {
		return "", fmt.Errorf("call succeeded after %v, want server status 4", elapsed)
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.DeadlineExceeded {
		return "", fmt.Errorf("got %s after %v, want server status code 4 DeadlineExceeded", describe(err), elapsed)
	}
	if elapsed >= 3*time.Second {
		return "", fmt.Errorf("server status 4 but only after %v, want < 3s", elapsed)
	}
	return fmt.Sprintf("server status 4 %q after %v", st.Message(), elapsed.Round(time.Millisecond)), nil
}

func checkUnimplemented(client *ttrpc.Client, _ string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resp testingv1.EchoResponse
	err := client.Call(ctx, serviceName, "Nope", &testingv1.EchoRequest{Payload: []byte("x")}, &resp)
	if err == nil {
		return "", errors.New("call of method Nope succeeded, want status code 12")
	}
	if st, ok := status.FromError(err); !ok || st.Code() != codes.Unimplemented {
		return "", fmt.Errorf("got %s, want status code 12 (Unimplemented)", describe(err))
	}
	return "", nil
}

func checkConcurrent(client *ttrpc.Client, _ string) (string, error) {
	const callers = 200
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			payload := []byte(fmt.Sprintf("caller-%03d-%016x", i, mathrand.Uint64()))
			delay := time.Duration(mathrand.Int63n(int64(20*time.Millisecond) + 1))
			resp, err := callEcho(ctx, client, &testingv1.EchoRequest{Payload: payload, DelayNano: int64(delay)})
			if err != nil {
				errs <- fmt.Errorf("caller %d: %s", i, describe(err))
				return
			}
			if !bytes.Equal(resp.Payload, payload) {
				errs <- fmt.Errorf("caller %d: got payload %q, want %q", i, resp.Payload, payload)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	var problems []string
	for err := range errs {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		more := ""
		if len(problems) > 3 {
			more = fmt.Sprintf(" (and %d more)", len(problems)-3)
			problems = problems[:3]
		}
		return "", fmt.Errorf("%s%s", strings.Join(problems, "; "), more)
	}
	return "", nil
}

func checkLarge(client *ttrpc.Client, _ string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	payload := make([]byte, 1<<20)
	if _, err := rand.Read(payload); err != nil {
		return "", err
	}
	resp, err := callEcho(ctx, client, &testingv1.EchoRequest{Payload: payload})
	if err != nil {
		return "", fmt.Errorf("call failed: %s", describe(err))
	}
	if !bytes.Equal(resp.Payload, payload) {
		return "", fmt.Errorf("payload of %d bytes differs from the %d bytes sent", len(resp.Payload), len(payload))
	}
	return "", nil
}

// ---------------------------------------------------------------- bench

func bench(socket string, payloadSize, concurrency int, duration, warmup time.Duration) int {
	client, err := dial(socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-echo-client: connect: %v\n", err)
		return 1
	}
	defer client.Close()

	payload := make([]byte, payloadSize)
	if _, err := rand.Read(payload); err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-echo-client: %v\n", err)
		return 1
	}
	req := &testingv1.EchoRequest{Payload: payload}
	ctx := context.Background()
	result, err := benchloop.Run(concurrency, duration, warmup, func() error {
		var resp testingv1.EchoResponse
		if err := client.Call(ctx, serviceName, methodName, req, &resp); err != nil {
			return fmt.Errorf("call failed: %s", describe(err))
		}
		if len(resp.Payload) != payloadSize {
			return fmt.Errorf("response payload %d bytes, want %d", len(resp.Payload), payloadSize)
		}
		return nil
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-echo-client: %v\n", err)
		return 1
	}
	fmt.Println(result.JSON("go-ttrpc", payloadSize, concurrency))
	return 0
}
