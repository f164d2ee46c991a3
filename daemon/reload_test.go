package daemon_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// TestReloadReopensAuditTrail: SIGHUPs that arrive while audited requests run race
// with nothing (under `go test -race` kilnd itself is built with -race) and lose no
// line; after 20 reloads kilnd holds one audit file, not 21; once the trail is renamed
// away (log rotation), a SIGHUP sends new lines to a new file; a reopen that fails keeps
// the old file, is logged, and kilnd goes on serving.
func TestReloadReopensAuditTrail(t *testing.T) {
	k := kilndIn(t, shortDir(t), "info")
	notify, ch := kilntest.Datagrams(t)
	k.Env = []string{"NOTIFY_SOCKET=" + notify}
	k.Start()
	expect(t, ch, "READY=1")
	ctx := ctxT(t)
	trail := filepath.Join(k.Root, "audit.log")

	// reload sends SIGHUP and waits until kilnd has reloaded: READY=1 comes after the
	// trail is reopened.
	reload := func() {
		t.Helper()
		if err := k.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		expect(t, ch, "RELOADING=1")
		expect(t, ch, "READY=1")
	}
	// deregister makes one audited request, for an image that is not there, and
	// returns the resource its audit line names.
	var seq atomic.Int64
	deregister := func() (string, error) {
		id := fmt.Sprintf("ami-%017x", seq.Add(1))
		if _, err := k.DeregisterImage(ctx, id); !isCode(err, api.CodeInvalidAMIIDNotFound) {
			return "", fmt.Errorf("deregister %s: %v, want %s", id, err, api.CodeInvalidAMIIDNotFound)
		}
		return "image=" + id, nil
	}
	// auditFiles are the audit files kilnd holds open.
	auditFiles := func() []string {
		t.Helper()
		dir := fmt.Sprintf("/proc/%d/fd", k.Cmd.Process.Pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(filepath.Base(target), "audit.log") {
				out = append(out, target)
			}
		}
		return out
	}
	holds := func(when, want string) {
		t.Helper()
		if got := auditFiles(); len(got) != 1 || got[0] != want {
			t.Errorf("%s: kilnd holds the audit files %q, want only %s", when, got, want)
		}
	}
	// lastResource is the first resource of the last line of the trail file at path,
	// and how many lines it has.
	lastResource := func(path string) (string, int) {
		t.Helper()
		lines := readTrail(t, path)
		if len(lines) == 0 || len(lines[len(lines)-1].Resource) == 0 {
			return "", len(lines)
		}
		return lines[len(lines)-1].Resource[0], len(lines)
	}

	// Audited requests from several clients while SIGHUPs arrive; between two reloads
	// each client has made at least one request.
	const clients, reloads = 4, 20
	var made atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := deregister(); err != nil {
					t.Error(err)
					return
				}
				made.Add(1)
			}
		}()
	}
	stopClients := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopClients()
	for i := range reloads {
		for n, deadline := made.Load(), time.Now().Add(30*time.Second); made.Load() < n+clients; {
			if time.Now().After(deadline) {
				t.Fatalf("before reload %d: no request done in 30s (%d in all)\n%s", i+1, made.Load(), "kilnd log:\n"+kilntest.Tail(k.Log.String(), 30))
			}
			time.Sleep(time.Millisecond)
		}
		reload()
	}
	stopClients()
	if _, n := lastResource(trail); int64(n) != made.Load() {
		t.Errorf("%d audited requests during %d reloads left %d audit lines", made.Load(), reloads, n)
	}
	holds(fmt.Sprintf("after %d reloads", reloads), trail)

	// Rotation: the trail renamed away, then SIGHUP.
	if err := os.Rename(trail, trail+".1"); err != nil {
		t.Fatal(err)
	}
	reload()
	res, err := deregister()
	if err != nil {
		t.Fatal(err)
	}
	if got, n := lastResource(trail); got != res || n != 1 {
		t.Errorf("after rotation the new trail has %d lines, the last naming %q; want 1 naming %s", n, got, res)
	}
	if _, n := lastResource(trail + ".1"); int64(n) != made.Load() {
		t.Errorf("the rotated trail grew after rotation: %d lines, want %d", n, made.Load())
	}
	holds("after rotation", trail)

	// A reopen that fails (a directory where the trail was): the old file is kept.
	if err := os.Rename(trail, trail+".2"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(trail, 0o700); err != nil {
		t.Fatal(err)
	}
	reload()
	if _, err := k.Info(ctx); err != nil {
		t.Fatalf("kilnd stopped serving after the audit trail could not be reopened: %v\n%s", err, "kilnd log:\n"+kilntest.Tail(k.Log.String(), 30))
	}
	if res, err = deregister(); err != nil {
		t.Fatal(err)
	}
	if got, n := lastResource(trail + ".2"); got != res || n != 2 {
		t.Errorf("after a failed reopen the old trail has %d lines, the last naming %q; want 2, the last naming %s", n, got, res)
	}
	holds("after a failed reopen", trail+".2")
	kilntest.Poll(t, 10*time.Second, "the failed reopen logged", func() bool {
		return strings.Contains(k.Log.String(), "the audit trail goes on in the file it had")
	}, func() string { return "kilnd log:\n" + kilntest.Tail(k.Log.String(), 30) })

	// The path usable again: the next SIGHUP reopens it.
	if err := os.Remove(trail); err != nil {
		t.Fatal(err)
	}
	reload()
	if res, err = deregister(); err != nil {
		t.Fatal(err)
	}
	if got, n := lastResource(trail); got != res || n != 1 {
		t.Errorf("after the path came back the trail has %d lines, the last naming %q; want 1 naming %s", n, got, res)
	}
	holds("after the path came back", trail)
	k.Stop() // fails the test on a data race kilnd reported
}

// readTrail reads the audit trail file at path, failing on a line that is not JSON.
func readTrail(t testing.TB, path string) []auditLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l auditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%s: audit line %q: %v", path, sc.Text(), err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
