package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// attachment is a kiln console --attach running in the test, its standard input a pipe.
type attachment struct {
	stdin          *io.PipeWriter
	stdout, stderr *kilntest.LockedBuffer
	exit           chan int
}

// attach runs kiln console REF --attach against socket, fed by the returned stdin.
func attach(t *testing.T, socket, ref string) *attachment {
	t.Helper()
	pr, pw := io.Pipe()
	a := &attachment{stdin: pw, stdout: &kilntest.LockedBuffer{}, stderr: &kilntest.LockedBuffer{}, exit: make(chan int, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), cliDeadline)
	t.Cleanup(func() { pw.Close(); cancel() })
	go func() {
		a.exit <- runWith(ctx, []string{"--socket", socket, "console", ref, "--attach"}, pr, a.stdout, a.stderr)
	}()
	return a
}

// ended waits for the attached kiln to exit and returns its status.
func (a *attachment) ended(t *testing.T, evidence func() string) int {
	t.Helper()
	select {
	case code := <-a.exit:
		return code
	case <-time.After(time.Minute):
		t.Fatalf("kiln console --attach did not end within a minute (stdout %q, stderr %q)\n%s",
			kilntest.Tail(a.stdout.String(), 10), a.stderr.String(), evidence())
		return 0
	}
}

// TestCLIConsole: kiln console --tail prints the log's last N lines (also with
// --follow, then what comes) and refuses a bad N as a usage error, as the API does with
// a 400; each QEMU start (and kiln reboot) puts one boot line on the console, before the
// boot's output and readiness; --attach with a piped standard input runs a command in
// the guest's serial shell and shows its output, which the log keeps too; a second
// client is refused while one is attached; the escape byte and the input's end detach;
// a stopped instance cannot be attached; and attach works after kilnd restarts.
func TestCLIConsole(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	k := startKilnd(t)
	socket := k.Socket
	// quiet: the log's tail is compared with what was read before, and a late kernel
	// message (a clocksource warning under a busy TCG) would come between.
	registerGuest(t, socket, "kiln-guest", kilntest.GuestCmdline+" quiet")
	code, out, errOut := kiln(t, socket, "run", "kiln-guest", "--cpus", "1", "--memory", "256M", "--wait", "-q")
	id := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(id, "i-") {
		t.Fatalf("run: exit %d, %q, %q", code, out, errOut)
	}
	t.Cleanup(func() { kiln(t, socket, "terminate", "--force", id) })
	evidence := func() string { return k.Evidence(id) }
	console := func() string {
		t.Helper()
		code, out, errOut := kiln(t, socket, "console", id)
		if code != 0 {
			t.Fatalf("console: exit %d: %s", code, errOut)
		}
		return out
	}
	// The guest's shell is up once its prompt follows the last ready line.
	waitPrompt := func() string {
		t.Helper()
		var text string
		kilntest.Poll(t, kilntest.GuestDeadline, "the guest's shell prompt on its console", func() bool {
			text = console()
			i := strings.LastIndex(text, "KILN-GUEST ready")
			return i >= 0 && strings.Contains(text[i:], "# ")
		}, evidence)
		return text
	}
	full := waitPrompt()
	if n := strings.Count(full, "-- kiln: boot "); n != 1 || !strings.HasPrefix(full, "-- kiln: boot 1 at ") || !strings.Contains(full, "("+id+") --\r\n") {
		t.Errorf("a launched instance's console has %d boot lines, want one first, naming %s:\n%s", n, id, kilntest.Tail(full, 5))
	}

	// --tail N: the last N lines, as the whole log has them (the guest is idle at its prompt).
	lines := strings.SplitAfter(full, "\n")
	for _, n := range []string{"1", "3"} {
		code, out, errOut := kiln(t, socket, "console", id, "--tail", n)
		want := strings.Join(lines[len(lines)-map[string]int{"1": 1, "3": 3}[n]:], "")
		if code != 0 || out != want {
			t.Errorf("console --tail %s: exit %d (%s)\n%q\nwant %q", n, code, errOut, out, want)
		}
	}
	if code, out, _ := kiln(t, socket, "console", id, "-n", "0"); code != 0 || out != "" {
		t.Errorf("console -n 0: exit %d, %q", code, out)
	}
	if code, out, _ := kiln(t, socket, "console", id, "-n", "100000"); code != 0 || out != full {
		t.Errorf("console -n 100000: exit %d, %d bytes, want the whole log (%d)", code, len(out), len(full))
	}
	for _, bad := range [][]string{{"--tail", "-1"}, {"-n", "x"}, {"-n", "1.5"}, {"--attach", "--tail", "3"}, {"--attach", "-f"}} {
		if code, _, errOut := kiln(t, socket, append([]string{"console", id}, bad...)...); code != 2 || !strings.Contains(errOut, "Run 'kiln console --help' for usage") {
			t.Errorf("console %s: exit %d, %q; want a usage error (2)", strings.Join(bad, " "), code, errOut)
		}
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	for _, q := range []string{"tail=-1", "tail=abc", "tail=", "follow=yes"} {
		resp, err := hc.Get("http://kilnd/v1/instances/" + id + "/console?" + q)
		if err != nil {
			t.Fatal(err)
		}
		var ae api.Error
		json.NewDecoder(resp.Body).Decode(&ae)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || ae.Code != api.CodeInvalidParameterValue {
			t.Errorf("GET console?%s: %d %+v; want 400 %s", q, resp.StatusCode, ae, api.CodeInvalidParameterValue)
		}
	}

	// --follow --tail 2: the last two lines, then what comes (ended by the stop below).
	follow := &kilntest.LockedBuffer{}
	followCtx, cancelFollow := context.WithTimeout(context.Background(), cliDeadline)
	defer cancelFollow()
	followExit := make(chan int, 1)
	go func() {
		followExit <- run(followCtx, []string{"--socket", socket, "console", id, "--follow", "--tail", "2"}, follow, io.Discard)
	}()
	lastTwo := strings.Join(lines[len(lines)-2:], "")
	kilntest.Poll(t, 30*time.Second, "console --follow --tail 2 printing the last two lines", func() bool { return follow.String() == lastTwo },
		func() string { return "got " + follow.String() + "\n" + evidence() })

	// --attach, the input piped: a command typed into the guest's shell, its output
	// back (42, which only the shell makes of what was typed).
	a := attach(t, socket, id)
	a.stdin.Write([]byte("echo KILN-$((6*7))-ATTACHED\n"))
	kilntest.Poll(t, kilntest.GuestDeadline, "the guest's answer through the attached console", func() bool {
		return strings.Contains(a.stdout.String(), "KILN-42-ATTACHED")
	}, func() string {
		return "stdout " + a.stdout.String() + "\nstderr " + a.stderr.String() + "\n" + evidence()
	})
	if want := "Connected to " + id + " (escape character is ^])\n"; !strings.HasPrefix(a.stderr.String(), want) {
		t.Errorf("attach's stderr %q, want it to begin %q", a.stderr.String(), want)
	}
	kilntest.Poll(t, 30*time.Second, "console --follow showing what the attached client typed", func() bool {
		return strings.Contains(follow.String(), "KILN-42-ATTACHED")
	}, func() string { return follow.String() })
	if f := follow.String(); !strings.HasPrefix(f, lastTwo) || strings.Contains(f, "KILN-GUEST boot gen") {
		t.Errorf("console --follow --tail 2 printed more than the last two lines before what came:\n%s", f)
	}
	// A second client, while one is attached, is refused and says why.
	code, _, errOut = kiln(t, socket, "console", id, "--attach")
	if code != 1 || !strings.Contains(errOut, api.CodeIncorrectState) || !strings.Contains(errOut, "already attached") {
		t.Errorf("a second attach: exit %d, %q; want %s saying it is already attached", code, errOut, api.CodeIncorrectState)
	}
	// Ctrl-] detaches; what was typed before it in the same write reaches the guest.
	a.stdin.Write([]byte("echo KILN-$((7*7))-BEFORE-ESCAPE\n\x1decho not-sent\n"))
	if code := a.ended(t, evidence); code != 0 || !strings.Contains(a.stderr.String(), "Detached from "+id) {
		t.Errorf("detach by Ctrl-]: exit %d, stderr %q", code, a.stderr.String())
	}
	// The log has what the guest wrote while a client was attached.
	kilntest.Poll(t, 30*time.Second, "the console log holding the output of attached sessions", func() bool {
		c := console()
		return strings.Contains(c, "KILN-42-ATTACHED\r\n") && strings.Contains(c, "KILN-49-BEFORE-ESCAPE\r\n")
	}, evidence)
	if c := console(); strings.Contains(c, "not-sent") {
		t.Errorf("what followed the escape byte reached the guest:\n%s", kilntest.Tail(c, 10))
	}

	// Stopped: a client attached meanwhile is told the console closed; attach refused;
	// --follow ended with the stop.
	a = attach(t, socket, id)
	kilntest.Poll(t, 30*time.Second, "a client attached before the stop", func() bool {
		return strings.Contains(a.stderr.String(), "Connected to "+id)
	}, func() string { return a.stderr.String() + "\n" + evidence() })
	if code, _, errOut = kiln(t, socket, "stop", id, "--wait"); code != 0 {
		t.Fatalf("stop: %s", errOut)
	}
	if code := a.ended(t, evidence); code != 0 || !strings.Contains(a.stderr.String(), "The console of "+id+" closed") ||
		!strings.Contains(a.stdout.String(), "KILN-GUEST poweroff") {
		t.Errorf("attached across the stop: exit %d, stderr %q, stdout %q; want the guest's power-off lines, then a word that the console closed",
			code, a.stderr.String(), kilntest.Tail(a.stdout.String(), 5))
	}
	select {
	case code := <-followExit:
		if code != 0 {
			t.Errorf("console --follow ended with exit %d at the stop", code)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("console --follow did not end within 30 s of the stop")
	}
	code, _, errOut = kiln(t, socket, "console", id, "--attach")
	if code != 1 || !strings.Contains(errOut, api.CodeIncorrectState) || !strings.Contains(errOut, "stopped") {
		t.Errorf("attach to a stopped instance: exit %d, %q; want %s saying it is stopped", code, errOut, api.CodeIncorrectState)
	}

	// Started again: a second boot line, after the first boot's output and before the
	// second's ready line (readiness counted from it).
	if code, _, errOut = kiln(t, socket, "start", id, "--wait"); code != 0 {
		t.Fatalf("start: %s\n%s", errOut, evidence())
	}
	full = waitPrompt()
	b1, b2 := strings.Index(full, "-- kiln: boot 1 at "), strings.Index(full, "-- kiln: boot 2 at ")
	if strings.Count(full, "-- kiln: boot ") != 2 || b1 < 0 || b2 < b1 || !strings.Contains(full[b2:], "KILN-GUEST ready") ||
		!strings.Contains(full[b1:b2], "KILN-GUEST ready") || strings.Count(full, "KILN-GUEST ready") != 2 {
		t.Errorf("after stop and start: want boot 1's line, its ready line, boot 2's line, its ready line:\n%s", full)
	}

	// kilnd restarted: the running instance's console can be attached again; the
	// input's end detaches.
	k.Restart()
	a = attach(t, socket, id)
	a.stdin.Write([]byte("echo KILN-$((8*8))-AFTER-RESTART\n"))
	kilntest.Poll(t, kilntest.GuestDeadline, "the guest's answer through a console attached after kilnd restarted", func() bool {
		return strings.Contains(a.stdout.String(), "KILN-64-AFTER-RESTART")
	}, func() string {
		return "stdout " + a.stdout.String() + "\nstderr " + a.stderr.String() + "\n" + k.Evidence(id)
	})
	a.stdin.Close()
	if code := a.ended(t, evidence); code != 0 || !strings.Contains(a.stderr.String(), "Detached from "+id) {
		t.Errorf("detach by the end of input: exit %d, stderr %q", code, a.stderr.String())
	}

	// On a terminal: raw while attached (the line typed goes as typed, \r and all;
	// Ctrl-C would reach the guest), Ctrl-] typed detaches, the terminal is as it was.
	leader, tty := openPTY(t)
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	var ttyOut, ttyErr kilntest.LockedBuffer
	ttyExit := make(chan int, 1)
	go func() {
		ttyExit <- runWith(context.Background(), []string{"--socket", socket, "console", id, "--attach"}, tty, &ttyOut, &ttyErr)
	}()
	kilntest.Poll(t, 30*time.Second, "a client attached on a terminal", func() bool {
		return strings.Contains(ttyErr.String(), "Connected to "+id)
	}, func() string { return ttyErr.String() + "\n" + evidence() })
	if raw, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS); raw.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 {
		t.Errorf("the terminal is not raw while attached (lflag %#x)", raw.Lflag)
	}
	leader.Write([]byte("echo KILN-$((9*9))-ON-A-TERMINAL\r"))
	kilntest.Poll(t, kilntest.GuestDeadline, "the guest's answer to a line typed on a terminal", func() bool {
		return strings.Contains(ttyOut.String(), "KILN-81-ON-A-TERMINAL")
	}, func() string { return "stdout " + ttyOut.String() + "\nstderr " + ttyErr.String() + "\n" + evidence() })
	leader.Write([]byte{0x1d})
	select {
	case code := <-ttyExit:
		if code != 0 || !strings.Contains(ttyErr.String(), "\r\nDetached from "+id+"\r\n") {
			t.Errorf("Ctrl-] on a terminal: exit %d, stderr %q", code, ttyErr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("Ctrl-] typed on a terminal did not detach within a minute (stderr %q)", ttyErr.String())
	}
	if after, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS); *after != *before {
		t.Errorf("the terminal after a detach: %+v, want it as before %+v", *after, *before)
	}

	// kiln reboot: a reboot line, once, with boot 2's count.
	if code, _, errOut = kiln(t, socket, "reboot", id, "--wait"); code != 0 {
		t.Fatalf("reboot: %s\n%s", errOut, evidence())
	}
	full = console()
	r := strings.Index(full, "-- kiln: reboot 2 at ")
	if strings.Count(full, "-- kiln: reboot ") != 1 || r < b2 || !strings.Contains(full[r:], "KILN-GUEST ready") {
		t.Errorf("after kiln reboot: want one reboot line after boot 2's, then the guest ready:\n%s", kilntest.Tail(full, 40))
	}
}
