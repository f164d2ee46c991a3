package hypervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kiln/hypervisor/qmp"
	"kiln/internal/kilntest"
)

// fakeQMP is a QMP server that answers query-status with the status it is given and
// sends the events written to its channel: QEMU cannot be made to hit a KVM internal
// error on demand.
type fakeQMP struct {
	status  chan string   // the next query-status answer; "running" when empty
	events  chan string   // raw event JSON to send
	queried chan struct{} // closed once the first query-status is answered
	// answers are the "return" values of other commands, by command ({} when not
	// given); after are events sent just after a command's reply, by command.
	answers, after map[string]string
	commands       chan string // every command's name, as it comes (dropped when full)
}

func startFakeQMP(t *testing.T) (*fakeQMP, string) {
	return startFakeQMPWith(t, nil, nil)
}

func startFakeQMPWith(t *testing.T, answers, after map[string]string) (*fakeQMP, string) {
	sock := filepath.Join(kilntest.ShortDir(t), "qmp.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &fakeQMP{status: make(chan string, 4), events: make(chan string, 4), queried: make(chan struct{}),
		answers: answers, after: after, commands: make(chan string, 64)}
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		out := make(chan string, 16)
		go func() {
			for s := range out {
				conn.Write([]byte(s + "\n"))
			}
		}()
		out <- `{"QMP": {"version": {}, "capabilities": []}}`
		go func() {
			for ev := range f.events {
				out <- ev
			}
		}()
		queried := false
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var cmd struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			json.Unmarshal(sc.Bytes(), &cmd)
			select {
			case f.commands <- cmd.Execute:
			default:
			}
			ret := `{}`
			if a, ok := f.answers[cmd.Execute]; ok {
				ret = a
			}
			if cmd.Execute == "query-status" {
				st := "running"
				select {
				case st = <-f.status:
				default:
				}
				ret = `{"status": "` + st + `", "running": ` + map[bool]string{true: "true", false: "false"}[st == "running"] + `, "singlestep": false}`
			}
			out <- `{"return": ` + ret + `, "id": ` + string(cmd.ID) + `}`
			if ev, ok := f.after[cmd.Execute]; ok {
				out <- ev
			}
			if cmd.Execute == "query-status" && !queried {
				queried = true
				close(f.queried)
			}
		}
	}()
	return f, sock
}

// watchFake watches a machine whose QMP is the fake, once Watch's first look at the
// run state is done.
func watchFake(t *testing.T, f *fakeQMP, sock string) (*Machine, <-chan Event) {
	t.Helper()
	m := dialFake(t, sock)
	events, err := m.Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.queried:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not ask for the run state within 10s")
	}
	return m, events
}

func nextEvent(t *testing.T, events <-chan Event) Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return Event{}
}

func TestWatch(t *testing.T) {
	// A stop on a KVM internal error: the run state says why.
	f, sock := startFakeQMP(t)
	m, events := watchFake(t, f, sock)
	if m.Failure() != "" {
		t.Fatalf("a running machine has failed: %q", m.Failure())
	}
	f.status <- "internal-error"
	f.events <- `{"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}`
	if e := nextEvent(t, events); e.Kind != GuestFailed || e.Reason != ReasonInternalError {
		t.Errorf("stop on an internal error: %+v", e)
	}
	select {
	case <-m.Failed():
		if m.Failure() != ReasonInternalError {
			t.Errorf("Failure() = %q", m.Failure())
		}
	default:
		t.Error("Failed() is not closed after the failure was sent")
	}

	// A pause a person asked for is no failure: the next event is the guest's shutdown.
	f, sock = startFakeQMP(t)
	m, events = watchFake(t, f, sock)
	f.status <- "paused"
	f.events <- `{"event": "STOP", "data": {}, "timestamp": {"seconds": 2, "microseconds": 0}}`
	f.events <- `{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 3, "microseconds": 0}}`
	if e := nextEvent(t, events); e.Kind != GuestPoweredOff || m.Failure() != "" {
		t.Errorf("after a plain pause and a guest shutdown: %+v, failure %q", e, m.Failure())
	}

	// A machine found already failed (a kilnd that reattaches), then a panic's events:
	// one failure, and the panic's SHUTDOWN is not a guest power-off.
	f, sock = startFakeQMP(t)
	f.status <- "guest-panicked"
	_, events = watchFake(t, f, sock)
	if e := nextEvent(t, events); e.Kind != GuestFailed || e.Reason != ReasonPanicked {
		t.Errorf("found panicked: %+v", e)
	}
	f.events <- `{"event": "GUEST_PANICKED", "data": {"action": "pause"}, "timestamp": {"seconds": 1, "microseconds": 0}}`
	f.events <- `{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-panic"}, "timestamp": {"seconds": 2, "microseconds": 0}}`
	f.events <- `{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}, "timestamp": {"seconds": 3, "microseconds": 0}}`
	select {
	case e := <-events:
		t.Errorf("a second failure or a panic's shutdown was reported: %+v", e)
	case <-time.After(300 * time.Millisecond):
	}

	// A reset the guest asked for is reported; one kilnd asked for is not.
	f, sock = startFakeQMP(t)
	m, events = watchFake(t, f, sock)
	f.events <- `{"event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}, "timestamp": {"seconds": 1, "microseconds": 0}}`
	f.events <- `{"event": "RESET", "data": {"guest": true, "reason": "guest-reset"}, "timestamp": {"seconds": 2, "microseconds": 0}}`
	if e := nextEvent(t, events); e.Kind != GuestReset || m.Failure() != "" {
		t.Errorf("after a host's and a guest's reset: %+v, failure %q", e, m.Failure())
	}

	// A panic while running: the event alone says it.
	f, sock = startFakeQMP(t)
	m, events = watchFake(t, f, sock)
	f.events <- `{"event": "GUEST_PANICKED", "data": {"action": "pause"}, "timestamp": {"seconds": 1, "microseconds": 0}}`
	if e := nextEvent(t, events); e.Kind != GuestFailed || e.Reason != ReasonPanicked || m.Failure() != ReasonPanicked {
		t.Errorf("panic event: %+v, failure %q", e, m.Failure())
	}
}

// TestReboot: Reboot returns once QEMU reports the reset, not when it answers the
// command; a QEMU that never resets makes it fail within its bound.
func TestReboot(t *testing.T) {
	reset := `{"event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}, "timestamp": {"seconds": 1, "microseconds": 0}}`
	f, sock := startFakeQMPWith(t, nil, map[string]string{"system_reset": reset})
	m := dialFake(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Reboot(ctx); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	if c := nextCommand(t, f, "system_reset"); c != "system_reset" {
		t.Errorf("Reboot sent %s", c)
	}

	// No RESET ever: the wait ends with ctx (shorter than resetWait here), saying so.
	_, sock = startFakeQMP(t)
	m = dialFake(t, sock)
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := m.Reboot(short); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("reboot without a reset: %v", err)
	}
}

// TestDiskDepth: a machine knows the depth of the disks it started with, without
// asking QEMU; a machine attached to (after a kilnd restart) counts them from QEMU's
// block nodes, <disk>-<i> format nodes over <disk>-f<i> file nodes.
func TestDiskDepth(t *testing.T) {
	nodes := `[{"node-name": "vda-f0"}, {"node-name": "vda-0"}, {"node-name": "vda-f1"}, {"node-name": "vda-1"},
		{"node-name": "vda-f2"}, {"node-name": "vda-2"}, {"node-name": "vdb-f0"}, {"node-name": "vdb-0"},
		{"node-name": "vdbx-3"}, {"node-name": "seed-f0"}, {"node-name": "seed-0"}, {"node-name": "vdc-f7"}]`
	nodes = strings.Join(strings.Fields(nodes), " ") // one QMP message is one line
	f, sock := startFakeQMPWith(t, map[string]string{"query-named-block-nodes": nodes}, nil)
	m := dialFake(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m.depths["vdz"] = 4 // as Start records it
	for disk, want := range map[string]int{"vda": 3, "vdb": 1, "seed": 1, "vdz": 4} {
		if got, err := m.depth(ctx, disk); err != nil || got != want {
			t.Errorf("depth of %s: %d, %v; want %d", disk, got, err, want)
		}
	}
	if got, err := m.depth(ctx, "vdc"); err == nil {
		t.Errorf("depth of vdc, which has no format node: %d", got)
	}
	// Asked once for each disk not known; vdz never, vda not again.
	m.depth(ctx, "vda")
	asked := 0
	for len(f.commands) > 0 {
		if <-f.commands == "query-named-block-nodes" {
			asked++
		}
	}
	if asked != 4 {
		t.Errorf("QEMU was asked for its block nodes %d times; want 4 (vda, vdb, seed, vdc)", asked)
	}
}

func TestFormatNodeIndex(t *testing.T) {
	for _, c := range []struct {
		disk, name string
		i          int
		ok         bool
	}{
		{"vda", "vda-0", 0, true},
		{"vda", "vda-12", 12, true},
		{"vda", "vda-f0", 0, false},
		{"vda", "vdab-0", 0, false},
		{"vd", "vda-0", 0, false},
		{"vda", "vda-", 0, false},
		{"vda", "vda--1", 0, false},
		{"vda", "vda-01", 0, false},
		{"vda", "vda-+1", 0, false},
	} {
		if i, ok := formatNodeIndex(c.disk, c.name); i != c.i || ok != c.ok {
			t.Errorf("formatNodeIndex(%q, %q) = %d, %v; want %d, %v", c.disk, c.name, i, ok, c.i, c.ok)
		}
	}
}

// dialFake is a machine whose QMP is the fake.
func dialFake(t *testing.T, sock string) *Machine {
	t.Helper()
	c, err := qmp.Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect() })
	m := newMachine("", 0, nil)
	m.client = c
	return m
}

// nextCommand is the next command the fake got other than qmp_capabilities.
func nextCommand(t *testing.T, f *fakeQMP, want string) string {
	t.Helper()
	for {
		select {
		case c := <-f.commands:
			if c != "qmp_capabilities" {
				return c
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s within 10s", want)
			return ""
		}
	}
}
