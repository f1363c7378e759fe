// vcsim: govmomi's vCenter simulator (VPX model) set up for the vsphere
// backend's tests (Tests/SystemTests/VSphereTests.swift).
//
// It serves a simulated vCenter on 127.0.0.1 (plain HTTP, a free port) that
// accepts one user with a password generated per run, creates virtual
// machines in datacenter DC0 (some in the folder "apps" and its sub-folder
// "apps/batch"), gives them guest NICs and addresses (IPv4 and IPv6, several
// cards, a card the guest does not report, a disconnected card), powers some
// off, suspends one and destroys one, then prints what it made, read back
// from the simulator, as one JSON line on stdout (the truth).
//
// On stderr it logs one line per SOAP method it serves ("soap Login",
// "soap RetrievePropertiesEx", ...), so tests can count requests, and once
// answered, the answer's size ("answered RetrievePropertiesEx 5120"), so
// benchmarks can weigh them.
//
// A second user, "noperm", logs in to a NoPermission fault: vCenter refuses
// a user that holds no permission at all with NoPermission (the simulator
// enforces no permissions, so the front end below answers it).
//
// The simulator answers RetrievePropertiesEx whole; the front end here pages
// it as vCenter does: when the request's maxObjects is smaller than the
// answer, it returns that many objects and a token, and serves
// ContinueRetrievePropertiesEx and CancelRetrievePropertiesEx itself.
//
// Commands on stdin, one per line, each acknowledged on stdout with
// "ok COMMAND" (or "error COMMAND: why"):
//
//	power-off NAME    power the VM off (guest state notRunning)
//	power-on NAME     power the VM on (guest state running)
//	rename NAME NEW   rename the VM
//	destroy NAME      power the VM off if it is on, and destroy it
//	expire-sessions   every session seen so far is no longer authenticated
//	                  (requests with it get NotAuthenticated), as when
//	                  vCenter's idle timeout ends them
//
// It exits when stdin reaches end of file or its parent dies.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	datacenter = "DC0"
	nopermUser = "noperm"
)

// Address is one guest IP with what the backend must make of it, computed
// here with Go's net package (an oracle independent of the Swift code).
type Address struct {
	IP     string `json:"ip"`
	Prefix int32  `json:"prefix"`
	Type   string `json:"type"`
	CIDR   string `json:"cidr"`
	Scope  string `json:"scope"`
}

// Card is one virtual Ethernet card, in device order.
type Card struct {
	Key       int32     `json:"key"`
	Type      string    `json:"type"`
	MAC       string    `json:"mac"`
	Network   string    `json:"network"`
	Connected bool      `json:"connected"`
	Addresses []Address `json:"addresses"`
}

// VM is one virtual machine as the simulator holds it.
type VM struct {
	Name       string `json:"name"`
	Folder     string `json:"folder"`
	MoRef      string `json:"moref"`
	UUID       string `json:"uuid"`
	PowerState string `json:"power_state"`
	GuestState string `json:"guest_state"`
	Cards      []Card `json:"cards"`
}

// Truth is what the fixture prints.
type Truth struct {
	URL            string   `json:"url"`
	User           string   `json:"user"`
	Password       string   `json:"password"`
	NopermUser     string   `json:"noperm_user"`
	NopermPassword string   `json:"noperm_password"`
	Datacenter     string   `json:"datacenter"`
	VMs            []VM     `json:"vms"`
	Removed        []string `json:"removed"`
}

// guestIP is one address a guest reports on a NIC.
type guestIP struct {
	ip     string
	prefix int32
}

// plan is one VM to create.
type plan struct {
	name   string
	folder string
	// cards: adapter type and network ("dvpg" = the distributed port group).
	cards []struct{ kind, network string }
	// guest addresses per card, by card index; a card absent here is not
	// reported by the guest. matchByMAC: the guest NIC names no device.
	guest      map[int][]guestIP
	matchByMAC bool
	// disconnect: card indexes whose connectable.connected is false.
	disconnect map[int]bool
	power      string // poweredOn, poweredOff, suspended, or "destroy"
	guestState string
}

func card(kind, network string) struct{ kind, network string } {
	return struct{ kind, network string }{kind, network}
}

var plans = []plan{
	{
		name: "web-1",
		cards: []struct{ kind, network string }{
			card("vmxnet3", "VM Network"), card("e1000e", "dvpg"), card("e1000", "VM Network"),
		},
		guest: map[int][]guestIP{
			0: {{"10.0.0.5", 24}, {"2001:db8:0:1::5", 64}, {"fe80::250:56ff:fe00:5", 64}},
			1: {{"192.168.10.7", 16}, {"203.0.113.9", 24}},
		},
		disconnect: map[int]bool{2: true},
		power:      "poweredOn", guestState: "running",
	},
	{
		name:  "db-1",
		cards: []struct{ kind, network string }{card("vmxnet3", "VM Network")},
		power: "poweredOff", guestState: "notRunning",
	},
	{
		name:  "cache-1",
		cards: []struct{ kind, network string }{card("vmxnet3", "dvpg")},
		guest: map[int][]guestIP{0: {{"10.0.1.7", 23}}},
		power: "suspended", guestState: "notRunning",
	},
	{
		name: "api-1", folder: "apps",
		cards:      []struct{ kind, network string }{card("vmxnet3", "VM Network"), card("pcnet32", "VM Network")},
		guest:      map[int][]guestIP{0: {{"100.64.1.2", 10}, {"198.51.100.20", 24}}, 1: {{"172.16.5.4", 12}, {"fd00:1::4", 48}}},
		matchByMAC: true,
		power:      "poweredOn", guestState: "running",
	},
	{
		name: "worker-1", folder: "apps/batch",
		power: "poweredOn", guestState: "running",
	},
	{
		name:  "twin",
		cards: []struct{ kind, network string }{card("vmxnet3", "VM Network")},
		guest: map[int][]guestIP{0: {{"10.0.0.21", 24}}},
		power: "poweredOn", guestState: "running",
	},
	{
		name: "twin", folder: "apps",
		cards: []struct{ kind, network string }{card("vmxnet3", "VM Network")},
		guest: map[int][]guestIP{0: {{"10.0.0.22", 24}}},
		power: "poweredOff", guestState: "notRunning",
	},
	{
		name:  "gone-1",
		cards: []struct{ kind, network string }{card("vmxnet3", "VM Network")},
		power: "destroy",
	},
}

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "vcsim: "+format+"\n", args...)
	os.Exit(1)
}

func randomSecret() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		die("random: %v", err)
	}
	return hex.EncodeToString(b)
}

func main() {
	trace := flag.String("trace", "", "append every SOAP request and answer to this file (for capturing test inputs)")
	fleet := flag.Int("fleet", 0, "also create this many running VMs fleet-00000, fleet-00001, ... (one card, one guest IPv4 address each) for benchmarks")
	flag.Parse()

	// Go when the test process goes: the parent-death signal, and stdin EOF below.
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, 1 /* PR_SET_PDEATHSIG */, uintptr(syscall.SIGKILL), 0)
	if os.Getppid() == 1 {
		os.Exit(0)
	}

	user, password, nopermPassword := "poller", randomSecret(), randomSecret()

	if *trace != "" {
		f, err := os.OpenFile(*trace, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			die("trace: %v", err)
		}
		simulator.Trace = true
		simulator.TraceFile = f
	}

	model := simulator.VPX()
	model.Machine = 0 // only the VMs planned here
	if err := model.Create(); err != nil {
		die("create the model: %v", err)
	}
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(user, password)}
	// The simulator's own server, for the set-up (not logged).
	inner := model.Service.NewServer()

	ctx := context.Background()
	innerURL := *inner.URL
	innerURL.User = url.UserPassword(user, password)
	client, err := govmomi.NewClient(ctx, &innerURL, true)
	if err != nil {
		die("connect to the simulator: %v", err)
	}

	removed, err := setup(ctx, client, append(plans, fleetPlans(*fleet)...))
	if err != nil {
		die("set up: %v", err)
	}

	// The server the tests talk to: the simulator's handlers behind a logger.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die("listen: %v", err)
	}
	front := &frontEnd{
		next: model.Service.ServeMux, nopermPassword: nopermPassword,
		pages: map[string]pending{}, seen: map[string]bool{}, revoked: map[string]bool{},
	}
	go func() { _ = http.Serve(listener, front) }()

	truth := Truth{
		URL:            "http://" + listener.Addr().String() + "/sdk",
		User:           user,
		Password:       password,
		NopermUser:     nopermUser,
		NopermPassword: nopermPassword,
		Datacenter:     datacenter,
		VMs:            readTruth(),
		Removed:        removed,
	}
	line, err := json.Marshal(truth)
	if err != nil {
		die("truth: %v", err)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "%s\n", line)
	out.Flush()

	input := bufio.NewScanner(os.Stdin)
	for input.Scan() {
		command := strings.TrimSpace(input.Text())
		if command == "" {
			continue
		}
		var err error
		if command == "expire-sessions" {
			front.expireSessions()
		} else {
			err = run(ctx, client, command)
		}
		if err != nil {
			fmt.Fprintf(out, "error %s: %v\n", command, err)
		} else {
			fmt.Fprintf(out, "ok %s\n", command)
		}
		out.Flush()
	}
	os.Exit(0)
}

// fleetPlans are n running VMs in the datacenter's VM folder, each with
// one card and the guest address 10.200.0.0/16 + its index.
func fleetPlans(n int) []plan {
	var fleet []plan
	for i := 0; i < n; i++ {
		fleet = append(fleet, plan{
			name:  fmt.Sprintf("fleet-%05d", i),
			cards: []struct{ kind, network string }{card("vmxnet3", "VM Network")},
			guest: map[int][]guestIP{0: {{fmt.Sprintf("10.200.%d.%d", i/250, i%250+1), 16}}},
			power: "poweredOn", guestState: "running",
		})
	}
	return fleet
}

// setup creates the planned VMs; returns the names of those destroyed.
func setup(ctx context.Context, client *govmomi.Client, plans []plan) ([]string, error) {
	finder := find.NewFinder(client.Client, true)
	dc, err := finder.Datacenter(ctx, datacenter)
	if err != nil {
		return nil, err
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		return nil, err
	}
	apps, err := folders.VmFolder.CreateFolder(ctx, "apps")
	if err != nil {
		return nil, err
	}
	batch, err := apps.CreateFolder(ctx, "batch")
	if err != nil {
		return nil, err
	}
	byPath := map[string]*object.Folder{"": folders.VmFolder, "apps": apps, "apps/batch": batch}

	pool, err := finder.ResourcePool(ctx, "DC0_C0/Resources")
	if err != nil {
		return nil, err
	}
	vmNetwork, err := finder.Network(ctx, "VM Network")
	if err != nil {
		return nil, err
	}
	vmNetworkBacking, err := vmNetwork.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, err
	}
	dvpg, err := finder.Network(ctx, "DC0_DVPG0")
	if err != nil {
		return nil, err
	}
	dvpgBacking, err := dvpg.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, err
	}

	var removed []string
	for _, p := range plans {
		var devices object.VirtualDeviceList
		for i, c := range p.cards {
			backing := vmNetworkBacking
			if c.network == "dvpg" {
				backing = dvpgBacking
			}
			device, err := devices.CreateEthernetCard(c.kind, backing)
			if err != nil {
				return nil, err
			}
			card := device.(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
			card.Key = int32(-1 - i)
			card.Connectable = &types.VirtualDeviceConnectInfo{
				StartConnected: !p.disconnect[i],
				Connected:      !p.disconnect[i],
			}
			devices = append(devices, device)
		}
		spec := types.VirtualMachineConfigSpec{
			Name:    p.name,
			GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
			Files:   &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"},
		}
		spec.DeviceChange, err = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
		if err != nil {
			return nil, err
		}
		task, err := byPath[p.folder].CreateVM(ctx, spec, pool, nil)
		if err != nil {
			return nil, err
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("create %s: %v", p.name, err)
		}
		vm := object.NewVirtualMachine(client.Client, info.Result.(types.ManagedObjectReference))

		if p.power == "destroy" {
			task, err := vm.Destroy(ctx)
			if err == nil {
				err = task.Wait(ctx)
			}
			if err != nil {
				return nil, fmt.Errorf("destroy %s: %v", p.name, err)
			}
			removed = append(removed, p.name)
			continue
		}
		if p.power == "poweredOn" || p.power == "suspended" {
			if err := waitFor(vm.PowerOn(ctx)); err != nil {
				return nil, fmt.Errorf("power on %s: %v", p.name, err)
			}
		}
		if p.power == "suspended" {
			if err := waitFor(vm.Suspend(ctx)); err != nil {
				return nil, fmt.Errorf("suspend %s: %v", p.name, err)
			}
		}
		setGuest(vm.Reference(), p)
	}
	return removed, nil
}

func waitFor(task *object.Task, err error) error {
	if err != nil {
		return err
	}
	return task.Wait(context.Background())
}

// setGuest sets what the VM's guest reports: its state and, per card, the
// addresses planned (a card without any is not reported at all).
func setGuest(ref types.ManagedObjectReference, p plan) {
	vm := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	simulator.Map.WithLock(vm, func() {
		var nics []types.GuestNicInfo
		for i, c := range ethernetCards(vm) {
			addresses, reported := p.guest[i]
			if !reported {
				continue
			}
			nic := types.GuestNicInfo{
				MacAddress:     c.MacAddress,
				Connected:      true,
				DeviceConfigId: c.Key,
				IpConfig:       &types.NetIpConfigInfo{},
			}
			if p.matchByMAC {
				nic.DeviceConfigId = -1
			}
			if backing, ok := c.Backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok {
				nic.Network = backing.DeviceName
			}
			for _, a := range addresses {
				nic.IpAddress = append(nic.IpAddress, a.ip)
				nic.IpConfig.IpAddress = append(nic.IpConfig.IpAddress, types.NetIpConfigInfoIpAddress{
					IpAddress: a.ip, PrefixLength: a.prefix, State: "preferred",
				})
			}
			nics = append(nics, nic)
		}
		changes := []types.PropertyChange{
			{Name: "guest.net", Val: nics},
			{Name: "guest.guestState", Val: p.guestState},
		}
		if len(nics) > 0 && len(nics[0].IpAddress) > 0 {
			changes = append(changes, types.PropertyChange{Name: "guest.ipAddress", Val: nics[0].IpAddress[0]})
		}
		simulator.Map.Update(vm, changes)
	})
}

// ethernetCards are the VM's virtual Ethernet cards in device order.
func ethernetCards(vm *simulator.VirtualMachine) []*types.VirtualEthernetCard {
	var cards []*types.VirtualEthernetCard
	for _, device := range vm.Config.Hardware.Device {
		if c, ok := device.(types.BaseVirtualEthernetCard); ok {
			cards = append(cards, c.GetVirtualEthernetCard())
		}
	}
	return cards
}

// readTruth reads every VM of DC0 back from the simulator.
func readTruth() []VM {
	var vms []VM
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm := entity.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm, func() {
			vms = append(vms, describe(vm))
		})
	}
	sort.Slice(vms, func(i, j int) bool {
		if vms[i].Name != vms[j].Name {
			return vms[i].Name < vms[j].Name
		}
		return vms[i].MoRef < vms[j].MoRef
	})
	return vms
}

func describe(vm *simulator.VirtualMachine) VM {
	out := VM{
		Name:       vm.Name,
		Folder:     folderPath(vm),
		MoRef:      vm.Self.Value,
		UUID:       vm.Config.InstanceUuid,
		PowerState: string(vm.Runtime.PowerState),
		GuestState: vm.Guest.GuestState,
		Cards:      []Card{},
	}
	for _, device := range vm.Config.Hardware.Device {
		c, ok := device.(types.BaseVirtualEthernetCard)
		if !ok {
			continue
		}
		card := c.GetVirtualEthernetCard()
		entry := Card{
			Key:       card.Key,
			Type:      fmt.Sprintf("%T", device)[len("*types."):],
			MAC:       card.MacAddress,
			Connected: card.Connectable != nil && card.Connectable.Connected,
			Addresses: []Address{},
		}
		switch backing := card.Backing.(type) {
		case *types.VirtualEthernetCardNetworkBackingInfo:
			entry.Network = backing.DeviceName
		case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
			entry.Network = backing.Port.PortgroupKey
		}
		for _, nic := range vm.Guest.Net {
			if nic.DeviceConfigId != card.Key && !(nic.DeviceConfigId == -1 && nic.MacAddress == card.MacAddress) {
				continue
			}
			if nic.IpConfig == nil {
				break
			}
			for _, a := range nic.IpConfig.IpAddress {
				entry.Addresses = append(entry.Addresses, address(a.IpAddress, a.PrefixLength))
			}
			break
		}
		out.Cards = append(out.Cards, entry)
	}
	return out
}

// folderPath is the VM's folder under the datacenter's VM folder ("" for the VM folder itself).
func folderPath(vm *simulator.VirtualMachine) string {
	var parts []string
	parent := vm.Parent
	for parent != nil {
		folder, ok := simulator.Map.Get(*parent).(*simulator.Folder)
		if !ok {
			break
		}
		if _, isDatacenter := simulator.Map.Get(*folder.Parent).(*simulator.Datacenter); isDatacenter {
			break
		}
		parts = append([]string{folder.Name}, parts...)
		parent = folder.Parent
	}
	return strings.Join(parts, "/")
}

// address computes the expected CIDR and scope with Go's net package.
func address(value string, prefix int32) Address {
	ip := net.ParseIP(value)
	kind, bits := "ipv6", 128
	if ip.To4() != nil {
		kind, bits = "ipv4", 32
	}
	mask := net.CIDRMask(int(prefix), bits)
	network := &net.IPNet{IP: ip.Mask(mask), Mask: mask}
	scope := "public"
	_, sharedSpace, _ := net.ParseCIDR("100.64.0.0/10")
	switch {
	case ip.IsLoopback():
		scope = "machine-local"
	case ip.IsLinkLocalUnicast():
		scope = "link-local"
	case ip.IsPrivate() || sharedSpace.Contains(ip):
		scope = "cloud-local"
	}
	return Address{IP: value, Prefix: prefix, Type: kind, CIDR: network.String(), Scope: scope}
}

// run carries out one stdin command.
func run(ctx context.Context, client *govmomi.Client, command string) error {
	fields := strings.Fields(command)
	if want := map[string]int{"rename": 3}[fields[0]]; want != 0 && len(fields) != want {
		return fmt.Errorf("want %s NAME NEW", fields[0])
	} else if want == 0 && len(fields) != 2 {
		return fmt.Errorf("want COMMAND NAME")
	}
	var target *simulator.VirtualMachine
	for _, entity := range simulator.Map.All("VirtualMachine") {
		if vm := entity.(*simulator.VirtualMachine); vm.Name == fields[1] {
			target = vm
			break
		}
	}
	if target == nil {
		return fmt.Errorf("no VM named %s", fields[1])
	}
	vm := object.NewVirtualMachine(client.Client, target.Self)
	guestState := ""
	switch fields[0] {
	case "power-off":
		if err := waitFor(vm.PowerOff(ctx)); err != nil {
			return err
		}
		guestState = "notRunning"
	case "power-on":
		if err := waitFor(vm.PowerOn(ctx)); err != nil {
			return err
		}
		guestState = "running"
	case "rename":
		return waitFor(vm.Rename(ctx, fields[2]))
	case "destroy":
		if target.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
			if err := waitFor(vm.PowerOff(ctx)); err != nil {
				return err
			}
		}
		return waitFor(vm.Destroy(ctx))
	default:
		return fmt.Errorf("unknown command %s", fields[0])
	}
	simulator.Map.WithLock(target, func() {
		simulator.Map.Update(target, []types.PropertyChange{{Name: "guest.guestState", Val: guestState}})
	})
	return nil
}

// frontEnd logs each SOAP method, answers the noperm user's Login with
// NoPermission, pages RetrievePropertiesEx, and refuses expired sessions;
// everything else goes to the simulator.
type frontEnd struct {
	next           http.Handler
	nopermPassword string

	mu sync.Mutex
	// pages: the objects still to serve, by token.
	pages     map[string]pending
	nextToken int
	// seen: session cookies seen; revoked: those expired.
	seen, revoked map[string]bool
}

// pending is what a token stands for: the objects left, and the page size.
type pending struct {
	objects []string
	max     int
}

const sessionCookie = "vmware_soap_session"

func (f *frontEnd) expireSessions() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for cookie := range f.seen {
		f.revoked[cookie] = true
	}
}

// countingWriter counts the bytes of an answer's body.
type countingWriter struct {
	http.ResponseWriter
	n int
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += n
	return n, err
}

func (f *frontEnd) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, err := ioutil.ReadAll(io.LimitReader(r.Body, 16<<20))
	_ = r.Body.Close()
	if err != nil {
		http.Error(rw, "cannot read the request", http.StatusBadRequest)
		return
	}
	method := soapMethod(body)
	w := &countingWriter{ResponseWriter: rw}
	defer func() { fmt.Fprintf(os.Stderr, "answered %s %d\n", method, w.n) }()
	f.mu.Lock()
	fmt.Fprintf(os.Stderr, "soap %s\n", method)
	revoked := false
	if cookie, err := r.Cookie(sessionCookie); err == nil {
		f.seen[cookie.Value] = true
		revoked = f.revoked[cookie.Value]
	}
	f.mu.Unlock()
	switch {
	case method == "Login" && isNopermLogin(body, f.nopermPassword):
		writeSOAP(w, http.StatusInternalServerError, noPermissionFault)
		return
	case revoked && method != "Login" && method != "RetrieveServiceContent":
		writeSOAP(w, http.StatusInternalServerError, notAuthenticatedFault)
		return
	case method == "ContinueRetrievePropertiesEx" || method == "CancelRetrievePropertiesEx":
		f.continuation(w, method, body)
		return
	}
	r.Body = ioutil.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	if method != "RetrievePropertiesEx" {
		f.next.ServeHTTP(w, r)
		return
	}
	recorder := httptest.NewRecorder()
	f.next.ServeHTTP(recorder, r)
	answer := recorder.Body.String()
	if max := maxObjects(body); recorder.Code == http.StatusOK && max > 0 {
		answer = f.firstPage(answer, max)
	}
	for name, values := range recorder.Header() {
		w.Header()[name] = values
	}
	w.WriteHeader(recorder.Code)
	_, _ = io.WriteString(w, answer)
}

var (
	objectsPattern    = regexp.MustCompile(`(?s)<objects>.*?</objects>`)
	maxObjectsPattern = regexp.MustCompile(`<maxObjects>([0-9]+)</maxObjects>`)
	tokenPattern      = regexp.MustCompile(`<token>([^<]*)</token>`)
)

func maxObjects(body []byte) int {
	match := maxObjectsPattern.FindSubmatch(body)
	if match == nil {
		return 0
	}
	var n int
	fmt.Sscanf(string(match[1]), "%d", &n)
	return n
}

// firstPage keeps the first max objects of a RetrievePropertiesEx answer,
// adds a token when more remain, and keeps the rest for continuations.
func (f *frontEnd) firstPage(answer string, max int) string {
	objects := objectsPattern.FindAllString(answer, -1)
	if len(objects) <= max {
		return answer
	}
	f.mu.Lock()
	f.nextToken++
	token := fmt.Sprintf("page-%d", f.nextToken)
	f.pages[token] = pending{objects: objects[max:], max: max}
	f.mu.Unlock()
	start := strings.Index(answer, "<objects>")
	end := strings.LastIndex(answer, "</objects>") + len("</objects>")
	return answer[:start] + "<token>" + token + "</token>" + strings.Join(objects[:max], "") + answer[end:]
}

// continuation serves ContinueRetrievePropertiesEx and CancelRetrievePropertiesEx.
func (f *frontEnd) continuation(w http.ResponseWriter, method string, body []byte) {
	match := tokenPattern.FindSubmatch(body)
	f.mu.Lock()
	defer f.mu.Unlock()
	var rest pending
	found := false
	if match != nil {
		rest, found = f.pages[string(match[1])]
	}
	if !found {
		writeSOAP(w, http.StatusInternalServerError, fault("InvalidArgument", "A specified parameter was not correct: token", "<invalidProperty>token</invalidProperty>"))
		return
	}
	delete(f.pages, string(match[1]))
	if method == "CancelRetrievePropertiesEx" {
		writeSOAP(w, http.StatusOK, envelope(`<CancelRetrievePropertiesExResponse xmlns="urn:vim25"></CancelRetrievePropertiesExResponse>`))
		return
	}
	page := rest.objects
	next := ""
	if len(rest.objects) > rest.max {
		page = rest.objects[:rest.max]
		f.nextToken++
		next = fmt.Sprintf("page-%d", f.nextToken)
		f.pages[next] = pending{objects: rest.objects[rest.max:], max: rest.max}
	}
	returnval := strings.Join(page, "")
	if next != "" {
		returnval = "<token>" + next + "</token>" + returnval
	}
	writeSOAP(w, http.StatusOK, envelope(`<ContinueRetrievePropertiesExResponse xmlns="urn:vim25"><returnval>`+returnval+`</returnval></ContinueRetrievePropertiesExResponse>`))
}

func writeSOAP(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, text)
}

func envelope(body string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">` +
		`<soapenv:Body>` + body + `</soapenv:Body></soapenv:Envelope>`
}

// fault is a SOAP fault as vCenter writes one.
func fault(kind, message, detail string) string {
	return envelope(`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>` + message + `</faultstring><detail><` +
		kind + `Fault xmlns="urn:vim25" xsi:type="` + kind + `">` + detail + `</` + kind + `Fault></detail></soapenv:Fault>`)
}

// What vCenter answers a Login by a user without any permission, and a
// request in a session that is no longer authenticated.
var (
	noPermissionFault = fault("NoPermission", "Permission to perform this operation was denied.",
		`<object type="Folder">group-d1</object><privilegeId>System.View</privilegeId>`)
	notAuthenticatedFault = fault("NotAuthenticated", "The session is not authenticated.",
		`<object type="Folder">group-d1</object><privilegeId>System.View</privilegeId>`)
)

// soapMethod is the name of the first element in the SOAP Body, or "?".
func soapMethod(body []byte) string {
	decoder := xml.NewDecoder(bytes.NewReader(body))
	inBody := false
	for {
		token, err := decoder.Token()
		if err != nil {
			return "?"
		}
		if start, ok := token.(xml.StartElement); ok {
			if inBody {
				return start.Name.Local
			}
			inBody = start.Name.Local == "Body"
		}
	}
}

func isNopermLogin(body []byte, password string) bool {
	var envelope struct {
		Body struct {
			Login struct {
				UserName string `xml:"userName"`
				Password string `xml:"password"`
			} `xml:"Login"`
		} `xml:"Body"`
	}
	if xml.Unmarshal(body, &envelope) != nil {
		return false
	}
	return envelope.Body.Login.UserName == nopermUser && envelope.Body.Login.Password == password
}
