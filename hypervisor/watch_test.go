package hypervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"kiln/hypervisor/qmp"
)

// fakeQMP is a QMP server that answers query-status with the status it is given and
// sends the events written to its channel: QEMU cannot be made to hit a KVM internal
// error on demand.
type fakeQMP struct {
	status  chan string   // the next query-status answer; "running" when empty
	events  chan string   // raw event JSON to send
	queried chan struct{} // closed once the first query-status is answered
}

func startFakeQMP(t *testing.T) (*fakeQMP, string) {
	dir, err := os.MkdirTemp("/tmp", "kq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "qmp.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &fakeQMP{status: make(chan string, 4), events: make(chan string, 4), queried: make(chan struct{})}
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
			ret := `{}`
			if cmd.Execute == "query-status" {
				st := "running"
				select {
				case st = <-f.status:
				default:
				}
				ret = `{"status": "` + st + `", "running": ` + map[bool]string{true: "true", false: "false"}[st == "running"] + `, "singlestep": false}`
			}
			out <- `{"return": ` + ret + `, "id": ` + string(cmd.ID) + `}`
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
	c, err := qmp.Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect() })
	m := newMachine("", 0, nil)
	m.QMP = c
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

	// A panic while running: the event alone says it.
	f, sock = startFakeQMP(t)
	m, events = watchFake(t, f, sock)
	f.events <- `{"event": "GUEST_PANICKED", "data": {"action": "pause"}, "timestamp": {"seconds": 1, "microseconds": 0}}`
	if e := nextEvent(t, events); e.Kind != GuestFailed || e.Reason != ReasonPanicked || m.Failure() != ReasonPanicked {
		t.Errorf("panic event: %+v, failure %q", e, m.Failure())
	}
}
