package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp/raw"

	"kiln/internal/kilntest"
)

// fakeQEMU is a QMP server that misbehaves on demand: it is for what real QEMU cannot
// be made to do (hang, send garbage, send huge replies).
type fakeQEMU struct {
	path   string
	ln     net.Listener
	handle func(conn net.Conn, r *bufio.Reader) // after the greeting
}

const greeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}` + "\r\n"

func newFake(t *testing.T, sendGreeting bool, handle func(conn net.Conn, r *bufio.Reader)) *fakeQEMU {
	t.Helper()
	f := &fakeQEMU{path: filepath.Join(kilntest.ShortDir(t), "qmp.sock"), handle: handle}
	var err error
	if f.ln, err = net.Listen("unix", f.path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.ln.Close() })
	go func() {
		for {
			conn, err := f.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if sendGreeting {
					conn.Write([]byte(greeting))
				}
				f.handle(conn, bufio.NewReader(conn))
			}()
		}
	}()
	return f
}

// answer reads commands and answers each with reply(name, id).
func answer(reply func(name string, id json.RawMessage) string) func(net.Conn, *bufio.Reader) {
	return func(conn net.Conn, r *bufio.Reader) {
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var cmd struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			json.Unmarshal(line, &cmd)
			if s := reply(cmd.Execute, cmd.ID); s != "" {
				conn.Write([]byte(s + "\r\n"))
			}
		}
	}
}

func ok(id json.RawMessage) string { return `{"return": {}, "id": ` + string(id) + `}` }

// within fails the test if f does not return within d: no deadlock.
func within(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still waiting after %s", d)
	}
}

func TestHangingServer(t *testing.T) {
	// No greeting at all.
	silent := newFake(t, false, func(conn net.Conn, r *bufio.Reader) { r.ReadBytes(0) })
	within(t, 5*time.Second, func() {
		if _, err := Dial(context.Background(), silent.path, WithTimeout(300*time.Millisecond)); err == nil {
			t.Error("Dial to a server that never greets succeeded")
		}
	})
	// Greets, negotiates, then never answers.
	hang := newFake(t, true, answer(func(name string, id json.RawMessage) string {
		if name == "qmp_capabilities" {
			return ok(id)
		}
		return ""
	}))
	c, err := Dial(context.Background(), hang.path, WithTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect()
	within(t, 5*time.Second, func() {
		if _, err := c.Run([]byte(`{"execute": "query-status"}`)); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run on a hanging server: %v", err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.RunContext(ctx, []byte(`{"execute": "query-status"}`)); !errors.Is(err, context.Canceled) {
		t.Errorf("RunContext with a cancelled context: %v", err)
	}
}

func TestGarbage(t *testing.T) {
	f := newFake(t, true, answer(func(name string, id json.RawMessage) string {
		if name == "qmp_capabilities" {
			return ok(id)
		}
		return `{"return": {}, "id": ` + string(id) + `, garbage`
	}))
	c, err := Dial(context.Background(), f.path, WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	within(t, 5*time.Second, func() {
		_, err := c.Run([]byte(`{"execute": "query-status"}`))
		if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("Run against garbage: %v", err)
		}
		<-c.Done()
		if _, err := c.Run([]byte(`{"execute": "query-status"}`)); !errors.Is(err, ErrClosed) {
			t.Errorf("Run after the connection failed: %v", err)
		}
	})
	g := newFake(t, false, func(conn net.Conn, r *bufio.Reader) { conn.Write([]byte("hello\r\n")); r.ReadBytes(0) })
	if _, err := Dial(context.Background(), g.path, WithTimeout(time.Second)); err == nil {
		t.Error("Dial accepted a greeting that is not QMP's")
	}
}

func TestHugeReply(t *testing.T) {
	big := `{"return": {"data": "` + strings.Repeat("x", 2<<20) + `"}, "id": `
	f := newFake(t, true, answer(func(name string, id json.RawMessage) string {
		switch name {
		case "qmp_capabilities":
			return ok(id)
		case "big-but-allowed":
			return `{"return": {"data": "` + strings.Repeat("y", 512<<10) + `"}, "id": ` + string(id) + `}`
		}
		return big + string(id) + `}`
	}))
	c, err := Dial(context.Background(), f.path, WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	within(t, 10*time.Second, func() {
		// Over go-qemu's 64 KiB limit, under kiln's 1 MiB: fine.
		out, err := c.Run([]byte(`{"execute": "big-but-allowed"}`))
		if err != nil || len(out) < 512<<10 {
			t.Errorf("a 512 KiB reply: %d bytes, %v", len(out), err)
		}
		if _, err := c.Run([]byte(`{"execute": "huge"}`)); err == nil || !strings.Contains(err.Error(), "over") {
			t.Errorf("a 2 MiB reply: %v", err)
		}
	})
}

func TestEventsFanOutAndCommands(t *testing.T) {
	f := newFake(t, true, answer(func(name string, id json.RawMessage) string {
		if name == "emit" {
			// Many events, then the reply: the events must not hold the reply up even
			// though one subscriber never reads.
			var b strings.Builder
			for i := 0; i < 200; i++ {
				b.WriteString(`{"event": "TICK", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}` + "\r\n")
			}
			b.WriteString(`{"event": "SHUTDOWN", "data": {"guest": true}, "timestamp": {"seconds": 2, "microseconds": 0}}` + "\r\n")
			return b.String() + ok(id)
		}
		return ok(id)
	}))
	c, err := Dial(context.Background(), f.path, WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stuck, _ := c.Events(ctx) // never read
	_ = stuck
	reader, _ := c.Events(ctx)
	got := make(chan int)
	go func() {
		n, shutdown := 0, 0
		for ev := range reader {
			n++
			if ev.Event == "SHUTDOWN" {
				shutdown++
			}
			if shutdown == 1 && n > eventBuffer {
				break
			}
		}
		got <- n
	}()
	within(t, 10*time.Second, func() {
		// Commands from many goroutines, each gets its own reply.
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.Run([]byte(`{"execute": "emit"}`)); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	})
	select {
	case n := <-got:
		if n <= eventBuffer {
			t.Errorf("the reading subscriber got %d events", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reading subscriber did not see SHUTDOWN")
	}
	cancel()
	within(t, 5*time.Second, func() {
		for range stuck {
		}
	})
}

func TestQMPErrorKeepsClass(t *testing.T) {
	f := newFake(t, true, answer(func(name string, id json.RawMessage) string {
		if name == "qmp_capabilities" {
			return ok(id)
		}
		return `{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": ` + string(id) + `}`
	}))
	c, err := Dial(context.Background(), f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect()
	_, err = c.Run([]byte(`{"execute": "nope"}`))
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || !strings.Contains(qe.Desc, "nope") {
		t.Errorf("error reply: %v", err)
	}
}

// TestRealQEMU drives a real QEMU (paused, no guest) through go-qemu's typed commands.
func TestRealQEMU(t *testing.T) {
	kilntest.Need(t, "qemu-system-x86_64")
	dir := kilntest.ShortDir(t)
	sock := filepath.Join(dir, "qmp.sock")
	cmd := kilntest.Command(t, "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-nodefaults", "-display", "none", "-S",
		"-m", "64", "-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	var c *Client
	var err error
	kilntest.Poll(t, 10*time.Second, "QMP answers", func() bool {
		c, err = Dial(context.Background(), sock)
		return err == nil
	}, func() string { return fmt.Sprintf("last dial: %v", err) })
	mon := raw.NewMonitor(c)
	st, err := mon.QueryStatus()
	if err != nil || st.Running || st.Status != raw.RunStatePrelaunch {
		t.Fatalf("query-status: %+v, %v", st, err)
	}
	events, _ := c.Events(context.Background())
	if err := mon.Cont(); err != nil {
		t.Fatal(err)
	}
	if st, err = mon.QueryStatus(); err != nil || !st.Running {
		t.Fatalf("after cont: %+v, %v", st, err)
	}
	if _, err := c.Run([]byte(`{"execute": "no-such-command"}`)); err == nil {
		t.Error("an unknown command succeeded")
	}
	if err := mon.Quit(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("QEMU did not quit")
	}
	sawShutdown := false
	for ev := range events {
		if ev.Event == "SHUTDOWN" {
			sawShutdown = true
		}
	}
	if !sawShutdown {
		t.Error("no SHUTDOWN event before the connection closed")
	}
}
