// ttrpc-provider-client calls every method of instancepoller.provider.v1.Provider
// on a shim with containerd's Go ttrpc (Debian golang-github-containerd-ttrpc-dev
// 1.1.1) over one unix connection, and prints the answers as one JSON
// document. Built by ../build.sh.
//
//	ttrpc-provider-client -socket PATH -credential key=value[,key=value...] -ids id1,id2,...
//	                      [-cloud-type T] [-shutdown]
//	ttrpc-provider-client -socket PATH -bench-health [-concurrency C] [-duration S] [-warmup S]
//
// Calls, in order, each with a 10 s deadline: Handshake (offering [1]),
// Health, ValidateCredential, Instances(ids), NetworkInterfaces(ids), and
// with -shutdown also Shutdown. An RPC error does not stop the run: it is
// recorded in "errors" and the next method is called.
//
// Output (one line):
//
//	{"handshake":{...},"health":{...},"validate":{...},"instances":[...],
//	 "interfaces":[...],"shutdown":true|false,
//	 "errors":[{"method":"Instances","code":16,"message":"..."}]}
//
// Field names are the proto's (snake_case); enums are their value names,
// e.g. "INSTANCE_STATE_RUNNING". A method that failed leaves its key null.
// Exit 0 when the JSON was printed, 1 when the connection failed, 2 on
// bad usage.
//
// With -bench-health it only calls Health, from C concurrent callers with
// no deadline, for warmup + duration seconds, and prints scripts/bench-rpc's
// JSON line (payload 0); exit 1 on the first failed call.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	benchloop "instancepoller-fixtures/benchloop"
	providerv1 "instancepoller/provider/v1"
)

const (
	serviceName = "instancepoller.provider.v1.Provider"
	callTimeout = 10 * time.Second
)

// ---------------------------------------------------------------- output

type handshakeJSON struct {
	ProtocolVersion uint32            `json:"protocol_version"`
	ShimName        string            `json:"shim_name"`
	ShimVersion     string            `json:"shim_version"`
	CloudTypes      []string          `json:"cloud_types"`
	Capabilities    *capabilitiesJSON `json:"capabilities"`
}

type capabilitiesJSON struct {
	MaxBatchSize    uint32 `json:"max_batch_size"`
	CredentialCache bool   `json:"credential_cache"`
}

type healthJSON struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type validateJSON struct {
	Valid  bool   `json:"valid"`
	Reason string `json:"reason"`
	Cached bool   `json:"cached"`
}

type instanceStatusJSON struct {
	State     string `json:"state"`
	RawStatus string `json:"raw_status"`
	Message   string `json:"message"`
}

type instanceJSON struct {
	InstanceID string              `json:"instance_id"`
	Found      bool                `json:"found"`
	Status     *instanceStatusJSON `json:"status"`
}

type addressJSON struct {
	Value string `json:"value"`
	Type  string `json:"type"`
	Scope string `json:"scope"`
	Cidr  string `json:"cidr"`
}

type interfaceJSON struct {
	DeviceIndex       int32         `json:"device_index"`
	MacAddress        string        `json:"mac_address"`
	ProviderID        string        `json:"provider_id"`
	ProviderSubnetID  string        `json:"provider_subnet_id"`
	ProviderNetworkID string        `json:"provider_network_id"`
	InterfaceName     string        `json:"interface_name"`
	Cidr              string        `json:"cidr"`
	Addresses         []addressJSON `json:"addresses"`
	ShadowAddresses   []addressJSON `json:"shadow_addresses"`
	Primary           bool          `json:"primary"`
	Disabled          bool          `json:"disabled"`
}

type instanceInterfacesJSON struct {
	InstanceID string          `json:"instance_id"`
	Found      bool            `json:"found"`
	Interfaces []interfaceJSON `json:"interfaces"`
}

type errorJSON struct {
	Method  string `json:"method"`
	Code    int32  `json:"code"`
	Message string `json:"message"`
}

type report struct {
	Handshake  *handshakeJSON           `json:"handshake"`
	Health     *healthJSON              `json:"health"`
	Validate   *validateJSON            `json:"validate"`
	Instances  []instanceJSON           `json:"instances"`
	Interfaces []instanceInterfacesJSON `json:"interfaces"`
	Shutdown   bool                     `json:"shutdown"`
	Errors     []errorJSON              `json:"errors"`
}

func addresses(in []*providerv1.Address) []addressJSON {
	out := make([]addressJSON, 0, len(in))
	for _, a := range in {
		out = append(out, addressJSON{Value: a.Value, Type: a.Type.String(), Scope: a.Scope.String(), Cidr: a.Cidr})
	}
	return out
}

// ---------------------------------------------------------------- calls

// errorOf turns a call's error into the recorded code and message: the
// server's status, or the client-side cause (deadline, closed connection).
func errorOf(method string, err error) errorJSON {
	if st, ok := status.FromError(err); ok {
		return errorJSON{Method: method, Code: int32(st.Code()), Message: st.Message()}
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, ttrpc.ErrClosed):
		code = codes.Unavailable
	}
	return errorJSON{Method: method, Code: int32(code), Message: err.Error()}
}

func main() {
	socket := flag.String("socket", "", "unix socket path of the shim")
	credentialFlag := flag.String("credential", "", "credential attributes: key=value[,key=value...]")
	idsFlag := flag.String("ids", "", "instance ids: id1,id2,...")
	cloudType := flag.String("cloud-type", "c-static", "CloudSpec.type sent with every cloud call")
	shutdown := flag.Bool("shutdown", false, "call Shutdown last")
	benchHealth := flag.Bool("bench-health", false, "only call Health in a loop and print a bench JSON line")
	concurrency := flag.Int("concurrency", 1, "bench: concurrent callers")
	duration := flag.Float64("duration", 5, "bench: measured seconds")
	warmup := flag.Float64("warmup", 1, "bench: unrecorded warmup seconds")
	flag.Parse()
	usage := "usage: ttrpc-provider-client -socket PATH -credential key=value[,key=value...] -ids id1,id2,... [-cloud-type T] [-shutdown]\n" +
		"       ttrpc-provider-client -socket PATH -bench-health [-concurrency C] [-duration S] [-warmup S]"
	if *socket == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if *benchHealth {
		if *concurrency < 1 || *duration <= 0 || *warmup < 0 {
			fmt.Fprintf(os.Stderr, "ttrpc-provider-client: need -concurrency >= 1, -duration > 0, -warmup >= 0\n%s\n", usage)
			os.Exit(2)
		}
		os.Exit(benchHealthCalls(*socket, *concurrency, seconds(*duration), seconds(*warmup)))
	}
	attributes := map[string]string{}
	if *credentialFlag != "" {
		for _, pair := range strings.Split(*credentialFlag, ",") {
			key, value, ok := strings.Cut(pair, "=")
			if !ok || key == "" {
				fmt.Fprintf(os.Stderr, "ttrpc-provider-client: -credential wants key=value pairs\n%s\n", usage)
				os.Exit(2)
			}
			attributes[key] = value
		}
	}
	var ids []string
	if *idsFlag != "" {
		ids = strings.Split(*idsFlag, ",")
	}

	conn, err := net.Dial("unix", *socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-provider-client: connect: %v\n", err)
		os.Exit(1)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()

	cloud := &providerv1.CloudSpec{Type: *cloudType, Name: "interop"}
	credential := &providerv1.Credential{Name: "interop", AuthType: "token", Attributes: attributes}
	out := report{Errors: []errorJSON{}}

	call := func(method string, req, resp interface{}) bool {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if err := client.Call(ctx, serviceName, method, req, resp); err != nil {
			out.Errors = append(out.Errors, errorOf(method, err))
			return false
		}
		return true
	}

	var handshake providerv1.HandshakeResponse
	if call("Handshake", &providerv1.HandshakeRequest{ProtocolVersions: []uint32{1}, ControllerVersion: "ttrpc-provider-client"}, &handshake) {
		h := &handshakeJSON{
			ProtocolVersion: handshake.ProtocolVersion,
			ShimName:        handshake.ShimName,
			ShimVersion:     handshake.ShimVersion,
			CloudTypes:      append([]string{}, handshake.CloudTypes...),
		}
		if c := handshake.Capabilities; c != nil {
			h.Capabilities = &capabilitiesJSON{MaxBatchSize: c.MaxBatchSize, CredentialCache: c.CredentialCache}
		}
		out.Handshake = h
	}

	var health providerv1.HealthResponse
	if call("Health", &providerv1.HealthRequest{}, &health) {
		out.Health = &healthJSON{Status: health.Status.String(), Message: health.Message}
	}

	var validate providerv1.ValidateCredentialResponse
	if call("ValidateCredential", &providerv1.ValidateCredentialRequest{Cloud: cloud, Credential: credential}, &validate) {
		out.Validate = &validateJSON{Valid: validate.Valid, Reason: validate.Reason, Cached: validate.Cached}
	}

	var instances providerv1.InstancesResponse
	if call("Instances", &providerv1.InstancesRequest{Cloud: cloud, Credential: credential, InstanceIds: ids}, &instances) {
		out.Instances = make([]instanceJSON, 0, len(instances.Results))
		for _, r := range instances.Results {
			entry := instanceJSON{InstanceID: r.InstanceId, Found: r.Found}
			if s := r.Status; s != nil {
				entry.Status = &instanceStatusJSON{State: s.State.String(), RawStatus: s.RawStatus, Message: s.Message}
			}
			out.Instances = append(out.Instances, entry)
		}
	}

	var interfaces providerv1.NetworkInterfacesResponse
	if call("NetworkInterfaces", &providerv1.NetworkInterfacesRequest{Cloud: cloud, Credential: credential, InstanceIds: ids}, &interfaces) {
		out.Interfaces = make([]instanceInterfacesJSON, 0, len(interfaces.Results))
		for _, r := range interfaces.Results {
			entry := instanceInterfacesJSON{InstanceID: r.InstanceId, Found: r.Found, Interfaces: []interfaceJSON{}}
			for _, n := range r.Interfaces {
				entry.Interfaces = append(entry.Interfaces, interfaceJSON{
					DeviceIndex:       n.DeviceIndex,
					MacAddress:        n.MacAddress,
					ProviderID:        n.ProviderId,
					ProviderSubnetID:  n.ProviderSubnetId,
					ProviderNetworkID: n.ProviderNetworkId,
					InterfaceName:     n.InterfaceName,
					Cidr:              n.Cidr,
					Addresses:         addresses(n.Addresses),
					ShadowAddresses:   addresses(n.ShadowAddresses),
					Primary:           n.Primary,
					Disabled:          n.Disabled,
				})
			}
			out.Interfaces = append(out.Interfaces, entry)
		}
	}

	if *shutdown {
		var resp providerv1.ShutdownResponse
		out.Shutdown = call("Shutdown", &providerv1.ShutdownRequest{}, &resp)
	}

	encoded, err := json.Marshal(out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-provider-client: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(encoded))
}

// ---------------------------------------------------------------- bench

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func benchHealthCalls(socket string, concurrency int, duration, warmup time.Duration) int {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-provider-client: connect: %v\n", err)
		return 1
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()

	ctx := context.Background()
	result, err := benchloop.Run(concurrency, duration, warmup, func() error {
		var resp providerv1.HealthResponse
		if err := client.Call(ctx, serviceName, "Health", &providerv1.HealthRequest{}, &resp); err != nil {
			e := errorOf("Health", err)
			return fmt.Errorf("Health failed: code %d %q", e.Code, e.Message)
		}
		if resp.Status != providerv1.HealthResponse_SERVING_STATUS_SERVING {
			return fmt.Errorf("Health answered %s, want SERVING_STATUS_SERVING", resp.Status)
		}
		return nil
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-provider-client: %v\n", err)
		return 1
	}
	fmt.Println(result.JSON("go-ttrpc", 0, concurrency))
	return 0
}
