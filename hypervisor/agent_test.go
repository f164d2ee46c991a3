package hypervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"kiln/internal/kilntest"
)

// hostAgentBlocked are the commands the tests' qemu-ga refuses: it runs on this machine,
// not in a guest. guest-shutdown must stay among them, as hostAgent checks: on the host it
// would power this machine off. The others would suspend the host or change it (its
// clock, file systems, processors, users, files, keys).
var hostAgentBlocked = []string{
	"guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid",
	"guest-set-time", "guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list", "guest-fsfreeze-thaw",
	"guest-fstrim", "guest-set-user-password", "guest-set-vcpus", "guest-set-memory-blocks",
	"guest-network-get-interfaces", "guest-file-open", "guest-file-write",
	"guest-ssh-add-authorized-keys", "guest-ssh-remove-authorized-keys",
}

// qemuGA is the path of qemu-ga (in /usr/sbin, which a user's PATH may lack), or ends
// the test as kilntest.Missing does.
func qemuGA(t *testing.T) string {
	t.Helper()
	prog := "qemu-ga"
	if _, err := exec.LookPath(prog); err != nil {
		prog = "/usr/sbin/qemu-ga"
	}
	return kilntest.Need(t, prog)
}

// hostAgent runs the real qemu-ga on this machine, in the foreground (not daemonized),
// listening on a Unix socket in a short directory that also holds its state, pid file
// and log (nothing under /var/run), with hostAgentBlocked refused. It returns the
// socket's path once the agent takes connections, and stops the agent when the test
// ends.
func hostAgent(t *testing.T) string {
	t.Helper()
	if !slices.Contains(hostAgentBlocked, "guest-shutdown") {
		t.Fatal("guest-shutdown is not blocked: a qemu-ga on the host would power this machine off")
	}
	bin := qemuGA(t)
	dir := kilntest.ShortDir(t)
	sock, logPath := filepath.Join(dir, "qga.sock"), filepath.Join(dir, "qga.log")
	cmd := kilntest.Command(t, bin, "--method", "unix-listen", "--path", sock,
		"--block-rpcs", strings.Join(hostAgentBlocked, ","), "--statedir", dir,
		"--pidfile", filepath.Join(dir, "qga.pid"), "--logfile", logPath)
	// QGA_CONF names a file that is not there, so no /etc/qemu/qemu-ga.conf of this
	// machine adds to the command line (or takes the block list away).
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "QGA_CONF=" + filepath.Join(dir, "none.conf")}
	var out kilntest.LockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	evidence := func() string {
		return "qemu-ga's log:\n" + kilntest.FileTail(logPath, 20) + "\nits output:\n" + out.String()
	}
	kilntest.Poll(t, 10*time.Second, "qemu-ga taking connections on "+sock, func() bool {
		select {
		case <-exited:
			t.Fatalf("qemu-ga exited at start: %v\n%s", cmd.ProcessState, evidence())
		default:
		}
		c, err := net.Dial("unix", sock)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}, evidence)
	return sock
}

func dialAgent(t *testing.T, sock string) *Agent {
	t.Helper()
	a, err := DialAgent(testContext(t, 10*time.Second), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// within fails the test if f does not return within d: no call hangs.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: still waiting after %s", what, d)
	}
}

func TestAgentPingAndInfo(t *testing.T) {
	sock := hostAgent(t)
	a := dialAgent(t, sock)
	ctx := testContext(t, 30*time.Second)
	if err := a.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	info, err := a.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	version, err := kilntest.Command(t, qemuGA(t), "--version").Output()
	if err != nil {
		t.Fatalf("qemu-ga --version: %v", err)
	}
	if info.Version == "" || !strings.Contains(string(version), "Guest Agent "+info.Version) {
		t.Errorf("Info gives version %q; qemu-ga --version says %q", info.Version, version)
	}
	for _, c := range []string{"guest-exec", "guest-exec-status", "guest-ping"} {
		if !info.Commands[c] {
			t.Errorf("Info: %s is not enabled (%v)", c, info.Commands)
		}
	}
	if enabled, ok := info.Commands["guest-shutdown"]; !ok || enabled {
		t.Errorf("Info: guest-shutdown known %v, enabled %v; want known and disabled", ok, enabled)
	}
}

func TestAgentExec(t *testing.T) {
	a := dialAgent(t, hostAgent(t))
	ctx := testContext(t, time.Minute)
	res, err := a.Exec(ctx, ExecRequest{Path: "/bin/sh", Args: []string{"-c", "echo out; echo err >&2; exit 3"}})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" || res.ExitCode != 3 || res.Signal != 0 ||
		res.StdoutTruncated || res.StderrTruncated || res.PID <= 0 {
		t.Errorf("Exec: %+v; want stdout \"out\\n\", stderr \"err\\n\", exit code 3, a pid", res)
	}

	res, err = a.Exec(ctx, ExecRequest{Path: "/bin/sh", Args: []string{"-c", "kill -TERM $$"}})
	if err != nil {
		t.Fatalf("Exec of a program a signal ends: %v", err)
	}
	if res.Signal != int(syscall.SIGTERM) || res.ExitCode != -1 {
		t.Errorf("Exec of a program SIGTERM ends: signal %d, exit code %d; want %d and -1", res.Signal, res.ExitCode, syscall.SIGTERM)
	}

	// Env is the whole environment; without it the program has the agent's.
	res, err = a.Exec(ctx, ExecRequest{Path: "/usr/bin/env", Env: []string{"KILN_TEST=yes"}})
	if err != nil || string(res.Stdout) != "KILN_TEST=yes\n" {
		t.Errorf("Exec of env with Env: %q, %v; want \"KILN_TEST=yes\\n\"", res.Stdout, err)
	}
	res, err = a.Exec(ctx, ExecRequest{Path: "/usr/bin/env"})
	if err != nil || !strings.Contains(string(res.Stdout), "QGA_CONF=") {
		t.Errorf("Exec of env without Env: %q, %v; want the agent's environment (QGA_CONF)", res.Stdout, err)
	}

	// 2 MiB of output in one answer: no line limit in the way.
	res, err = a.Exec(ctx, ExecRequest{Path: "/bin/sh", Args: []string{"-c", `head -c 2097152 /dev/zero | tr '\0' x`}})
	if err != nil || len(res.Stdout) != 2<<20 || bytes.Count(res.Stdout, []byte("x")) != 2<<20 || res.StdoutTruncated {
		t.Errorf("Exec printing 2 MiB: %d bytes (truncated %v), %v", len(res.Stdout), res.StdoutTruncated, err)
	}
}

func TestAgentExecStdin(t *testing.T) {
	a := dialAgent(t, hostAgent(t))
	in := []byte("line one\n\xff\x00 binary, and the sentinel byte\n")
	res, err := a.Exec(testContext(t, time.Minute), ExecRequest{Path: "/bin/cat", Stdin: in})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if !bytes.Equal(res.Stdout, in) || res.ExitCode != 0 {
		t.Errorf("cat of %q: %q, exit code %d", in, res.Stdout, res.ExitCode)
	}
}

func TestAgentExecMissingProgram(t *testing.T) {
	a := dialAgent(t, hostAgent(t))
	const missing = "/nonexistent/kiln-no-such-program"
	_, err := a.Exec(testContext(t, time.Minute), ExecRequest{Path: missing})
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Class != "GenericError" || !strings.Contains(ae.Desc, missing) ||
		!strings.Contains(err.Error(), missing) || errdefs.IsNotImplemented(err) {
		t.Fatalf("Exec of a missing program: %v (%#v); want the agent's GenericError naming %s", err, ae, missing)
	}
	t.Logf("the error: %v", err)
	// The refusal leaves the stream in step.
	if res, err := a.Exec(testContext(t, time.Minute), ExecRequest{Path: "/bin/true"}); err != nil || res.ExitCode != 0 {
		t.Errorf("Exec after the refusal: %+v, %v", res, err)
	}
}

func TestAgentExecDeadline(t *testing.T) {
	a := dialAgent(t, hostAgent(t))
	// Time for the agent to start the program on a busy machine; sleep outlives it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var res ExecResult
	var err error
	within(t, 20*time.Second, "Exec past its deadline", func() {
		res, err = a.Exec(ctx, ExecRequest{Path: "/bin/sleep", Args: []string{"60"}})
	})
	if !errors.Is(err, context.DeadlineExceeded) || res.PID <= 0 {
		t.Fatalf("Exec of sleep 60 within 5 s: pid %d, %v; want a pid and context.DeadlineExceeded", res.PID, err)
	}
	// The agent runs on this machine: its process is ours to see, and to end.
	if err := syscall.Kill(res.PID, 0); err != nil {
		t.Errorf("the process Exec left running: %d: %v", res.PID, err)
	}
	syscall.Kill(res.PID, syscall.SIGKILL)
	if err := a.Ping(testContext(t, 30*time.Second)); err != nil {
		t.Errorf("Ping after a call past its deadline: %v", err)
	}
}

// TestAgentStaleStream: qemu-ga keeps what a client sent across connections, so half a
// command left by an earlier client swallows the next client's command; the sentinel
// kilnd sends before its first sync makes the agent drop it.
func TestAgentStaleStream(t *testing.T) {
	sock := hostAgent(t)
	send := func(b string) net.Conn {
		// The agent takes one client at a time: dial as DialAgent does, through a full
		// backlog.
		a, err := DialAgent(testContext(t, 10*time.Second), sock)
		if err != nil {
			t.Fatal(err)
		}
		c := a.conn
		if _, err := c.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Half a command that a following command completes, as an element of its array.
	const half = `{"execute":"guest-ping","arguments":{"junk":[1,`
	send(half).Close()
	// The proof that the half command is there: a client without the sentinel gets no
	// answer, its ping being read as more of the half command.
	naive := send(`{"execute":"guest-ping"}` + "\n")
	naive.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 256)
	n, err := naive.Read(b)
	naive.Close()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a ping after half a command got %q, %v; want no answer (no stale bytes: this test shows nothing)", b[:n], err)
	}
	// More: a command whose answer nobody reads, and half a command that ends inside a
	// string (where the agent takes "{" and "}" as text).
	send(half).Close()
	send(`{"execute":"guest-info"}` + "\n" + `{"execute":"guest-ping","arguments":{"junk":"str`).Close()

	a := dialAgent(t, sock)
	ctx := testContext(t, time.Minute)
	if err := a.Ping(ctx); err != nil {
		t.Fatalf("Ping after stale bytes: %v", err)
	}
	res, err := a.Exec(ctx, ExecRequest{Path: "/bin/echo", Args: []string{"in step"}})
	if err != nil || string(res.Stdout) != "in step\n" {
		t.Errorf("Exec after stale bytes: %q, %v", res.Stdout, err)
	}
}

// TestAgentShutdownBlocked: the host's agent refuses guest-shutdown, and the refusal
// comes back with the agent's class and text. Shutdown is called only once the agent
// said it has the command disabled.
func TestAgentShutdownBlocked(t *testing.T) {
	a := dialAgent(t, hostAgent(t))
	ctx := testContext(t, time.Minute)
	info, err := a.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if enabled, ok := info.Commands["guest-shutdown"]; !ok || enabled {
		t.Fatalf("the host's agent does not say guest-shutdown is disabled (known %v, enabled %v): not calling it", ok, enabled)
	}
	err = a.Shutdown(ctx, ShutdownPowerdown)
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Class != "CommandNotFound" || !strings.Contains(ae.Desc, "has been disabled") || !errdefs.IsNotImplemented(err) {
		t.Fatalf("Shutdown against an agent with it disabled: %v (%#v); want CommandNotFound, \"has been disabled\", errdefs.ErrNotImplemented", err, ae)
	}
	t.Logf("the error: %v", err)
	if err := a.Ping(ctx); err != nil {
		t.Errorf("Ping after the refused shutdown: %v", err)
	}
}

// A fake agent is for what qemu-ga cannot be made to do on the host: stay silent, send
// stale answers, take guest-shutdown (the real one would power this machine off).

// agentCommand is a command as a fake agent reads it.
type agentCommand struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
}

// agentConn is a fake agent's side of a connection: commands with the sentinels taken
// out (and counted).
type agentConn struct {
	net.Conn
	dec       *json.Decoder
	sentinels atomic.Int64
}

func (c *agentConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		k := 0
		for _, b := range p[:n] {
			if b == sentinel {
				c.sentinels.Add(1)
				continue
			}
			p[k] = b
			k++
		}
		if k > 0 || err != nil {
			return k, err
		}
	}
}

func (c *agentConn) next() (agentCommand, error) {
	var cmd agentCommand
	err := c.dec.Decode(&cmd)
	return cmd, err
}

// echo answers a guest-sync-delimited as the agent does (offset 0), or with another id.
func (c *agentConn) echo(cmd agentCommand, offset int64) {
	var args struct {
		ID int64 `json:"id"`
	}
	json.Unmarshal(cmd.Arguments, &args)
	fmt.Fprintf(c, "\xff{\"return\": %d}\n", args.ID+offset)
}

// fakeAgent listens on a Unix socket and runs handle for each connection, closing it
// when handle returns.
func fakeAgent(t *testing.T, handle func(c *agentConn)) string {
	t.Helper()
	path := filepath.Join(kilntest.ShortDir(t), "qga.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				c := &agentConn{Conn: conn}
				c.dec = json.NewDecoder(c)
				handle(c)
			}()
		}
	}()
	return path
}

// serve answers sync and, from answers by command name, the others; a command without
// an answer gets none. It ends when the client goes.
func serve(answers map[string]string) func(c *agentConn) {
	return func(c *agentConn) {
		for {
			cmd, err := c.next()
			if err != nil {
				return
			}
			if cmd.Execute == "guest-sync-delimited" {
				c.echo(cmd, 0)
			} else if a, ok := answers[cmd.Execute]; ok {
				io.WriteString(c, a+"\n")
			}
		}
	}
}

func TestAgentDeadline(t *testing.T) {
	got := make(chan struct{}, 16)
	sock := fakeAgent(t, func(c *agentConn) { // takes everything, answers nothing
		b := make([]byte, 4096)
		for first := true; ; first = false {
			if _, err := c.Conn.Read(b); err != nil {
				return
			}
			if first {
				got <- struct{}{}
			}
		}
	})

	a := dialAgent(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	within(t, 5*time.Second, "Ping of a silent agent", func() {
		if err := a.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Ping of a silent agent within 300 ms: %v; want context.DeadlineExceeded", err)
		}
	})
	<-got

	b := dialAgent(t, sock)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { <-got; cancel() }()
	within(t, 5*time.Second, "Ping of a silent agent, cancelled", func() {
		if err := b.Ping(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Ping of a silent agent, cancelled: %v; want context.Canceled", err)
		}
	})

	c := dialAgent(t, sock)
	go func() { <-got; c.Close() }()
	within(t, 5*time.Second, "Ping of a silent agent, closed meanwhile", func() {
		if err := c.Ping(context.Background()); !errdefs.IsUnavailable(err) {
			t.Errorf("Ping of a silent agent, the Agent closed meanwhile: %v; want errdefs.ErrUnavailable", err)
		}
	})
	if err := c.Ping(context.Background()); !errdefs.IsUnavailable(err) {
		t.Errorf("Ping of a closed Agent: %v; want errdefs.ErrUnavailable", err)
	}
}

// TestAgentStaleAnswers: what the stream holds before the echo of the sync's id is
// dropped (garbage, echoes of other ids, half an echo, the late answer to a call whose
// ctx ended), and the sentinel goes before a sync only when the agent may hold half a
// command (at first, and after a call that failed).
func TestAgentStaleAnswers(t *testing.T) {
	const stale = `{"return": {}}` + "\n" + `}}] garbage "` + "\n"
	sentinels := make(chan int64, 8) // seen before each sync
	sock := fakeAgent(t, func(c *agentConn) {
		late, syncs := "", 0
		for {
			cmd, err := c.next()
			if err != nil {
				return
			}
			switch cmd.Execute {
			case "guest-sync-delimited":
				syncs++
				sentinels <- c.sentinels.Load()
				io.WriteString(c, late+stale)
				c.echo(cmd, 1)
				io.WriteString(c, "\xff{\"return\": ")
				c.echo(cmd, 0)
			case "guest-info":
				switch syncs {
				case 1:
					io.WriteString(c, `{"return": {"version": "first", "supported_commands": []}}`+"\n")
				case 2: // no answer now: after the next sync
					late = `{"return": {"version": "late", "supported_commands": []}}` + "\n"
				default:
					io.WriteString(c, `{"return": {"version": "third", "supported_commands": []}}`+"\n")
				}
			}
		}
	})
	a := dialAgent(t, sock)
	info, err := a.Info(testContext(t, 10*time.Second))
	if err != nil || info.Version != "first" {
		t.Fatalf("Info: %q, %v; want \"first\"", info.Version, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := a.Info(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Info unanswered: %v; want context.DeadlineExceeded", err)
	}
	info, err = a.Info(testContext(t, 10*time.Second))
	if err != nil || info.Version != "third" {
		t.Fatalf("Info after the unanswered one: %q, %v; want \"third\", not the late answer", info.Version, err)
	}
	var seen []int64
	for len(sentinels) > 0 {
		seen = append(seen, <-sentinels)
	}
	if !slices.Equal(seen, []int64{1, 1, 2}) {
		t.Errorf("sentinels the agent had seen at each sync: %v; want [1 1 2] (one at first, none while in step, one after the failure)", seen)
	}
}

func TestAgentShutdown(t *testing.T) {
	t.Run("closes", func(t *testing.T) { // the agent goes at once
		modes := make(chan string, 1)
		sock := fakeAgent(t, func(c *agentConn) {
			for {
				cmd, err := c.next()
				if err != nil {
					return
				}
				switch cmd.Execute {
				case "guest-sync-delimited":
					c.echo(cmd, 0)
				case "guest-shutdown":
					var args struct {
						Mode string `json:"mode"`
					}
					json.Unmarshal(cmd.Arguments, &args)
					modes <- args.Mode
					return
				}
			}
		})
		a := dialAgent(t, sock)
		within(t, 10*time.Second, "Shutdown of an agent that goes", func() {
			if err := a.Shutdown(context.Background(), ""); err != nil {
				t.Errorf("Shutdown of an agent that closes the connection: %v", err)
			}
		})
		if m := <-modes; m != ShutdownPowerdown {
			t.Errorf("the agent got mode %q; want %q", m, ShutdownPowerdown)
		}
		if err := a.Ping(testContext(t, 10*time.Second)); !errdefs.IsUnavailable(err) {
			t.Errorf("Ping after the agent went: %v; want errdefs.ErrUnavailable", err)
		}
	})

	t.Run("answers-the-next-sync", func(t *testing.T) { // as qemu-ga does once the shutdown program ran
		sock := fakeAgent(t, serve(map[string]string{"guest-ping": `{"return": {}}`}))
		a := dialAgent(t, sock)
		start := time.Now()
		if err := a.Shutdown(context.Background(), ShutdownReboot); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if d := time.Since(start); d >= ShutdownWait {
			t.Errorf("Shutdown took %s: it waited out ShutdownWait instead of taking the echo of its sync as the answer", d)
		}
		if err := a.Ping(testContext(t, 10*time.Second)); err != nil {
			t.Errorf("Ping after Shutdown: %v", err)
		}
	})

	t.Run("silent", func(t *testing.T) { // killed by the shutdown before it said anything
		sock := fakeAgent(t, func(c *agentConn) {
			for {
				cmd, err := c.next()
				if err != nil || cmd.Execute == "guest-shutdown" {
					io.Copy(io.Discard, c.Conn)
					return
				}
				c.echo(cmd, 0)
			}
		})
		a := dialAgent(t, sock)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		within(t, 10*time.Second, "Shutdown of an agent gone silent", func() {
			if err := a.Shutdown(ctx, ShutdownHalt); err != nil {
				t.Errorf("Shutdown of an agent gone silent: %v", err)
			}
		})
	})

	t.Run("refused", func(t *testing.T) {
		const desc = "child process has failed to shutdown" // qemu-ga 7.2, when /sbin/shutdown fails
		sock := fakeAgent(t, serve(map[string]string{
			"guest-shutdown": `{"error": {"class": "GenericError", "desc": "` + desc + `"}}`,
			"guest-ping":     `{"return": {}}`,
		}))
		a := dialAgent(t, sock)
		err := a.Shutdown(testContext(t, 10*time.Second), "")
		var ae *AgentError
		if !errors.As(err, &ae) || ae.Class != "GenericError" || ae.Desc != desc || errdefs.IsNotImplemented(err) {
			t.Fatalf("Shutdown refused: %v; want GenericError %q", err, desc)
		}
		if err := a.Ping(testContext(t, 10*time.Second)); err != nil {
			t.Errorf("Ping after the refusal: %v", err)
		}
	})

	t.Run("bad-mode", func(t *testing.T) {
		cmds := make(chan string, 8)
		sock := fakeAgent(t, func(c *agentConn) {
			for {
				cmd, err := c.next()
				if err != nil {
					return
				}
				cmds <- cmd.Execute
				if cmd.Execute == "guest-sync-delimited" {
					c.echo(cmd, 0)
				} else {
					io.WriteString(c, `{"return": {}}`+"\n")
				}
			}
		})
		a := dialAgent(t, sock)
		if err := a.Shutdown(testContext(t, 10*time.Second), "sleep"); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Shutdown with mode sleep: %v; want errdefs.ErrInvalidArgument", err)
		}
		if err := a.Ping(testContext(t, 10*time.Second)); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		var seen []string
		for len(cmds) > 0 {
			seen = append(seen, <-cmds)
		}
		if !slices.Equal(seen, []string{"guest-sync-delimited", "guest-ping"}) {
			t.Errorf("the agent got %v; want only Ping's sync and ping", seen)
		}
	})
}

// TestAgentTooBig: a message over maxAgentMessage fails the call, not kilnd's memory.
func TestAgentTooBig(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 64 MiB")
	}
	big := `{"return": {"version": "` + strings.Repeat("x", maxAgentMessage) + `"}}`
	sock := fakeAgent(t, serve(map[string]string{"guest-info": big, "guest-ping": `{"return": {}}`}))
	a := dialAgent(t, sock)
	if _, err := a.Info(testContext(t, time.Minute)); !errors.Is(err, errTooBig) {
		t.Errorf("Info with a %d-byte answer: %v", len(big), err)
	}
	if err := a.Ping(testContext(t, time.Minute)); err != nil {
		t.Errorf("Ping after the oversized answer: %v", err)
	}
}
