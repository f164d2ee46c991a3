package daemon_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// follower is `kiln events --follow -o json` running as a user, in its own process.
type follower struct {
	t      *testing.T
	who    string
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}

	mu     sync.Mutex
	events []api.Event
	bad    []string // lines that are not events
}

func follow(t *testing.T, a *account, args ...string) *follower {
	t.Helper()
	f := &follower{t: t, who: a.name, done: make(chan struct{})}
	f.cmd = exec.Command(kilnBin, append([]string{"--socket", a.socket, "events", "--follow", "-o", "json"}, args...)...)
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: a.cred}
	f.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent"}
	f.cmd.Dir = "/"
	f.cmd.Stderr = &f.stderr
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.cmd.Process.Kill(); <-f.done })
	go func() {
		defer close(f.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var ev api.Event
			f.mu.Lock()
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				f.bad = append(f.bad, sc.Text())
			} else {
				f.events = append(f.events, ev)
			}
			f.mu.Unlock()
		}
		f.cmd.Wait()
	}()
	return f
}

// seen are the events the follower printed so far.
func (f *follower) seen() []api.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

// waitFor waits until the follower printed an event about resource entering state.
func (f *follower) waitFor(resource, state string) {
	f.t.Helper()
	kilntest.Poll(f.t, 30*time.Second, fmt.Sprintf("%s's follower to print %s %s", f.who, resource, state), func() bool {
		for _, ev := range f.seen() {
			if _, r, s := ev.Summary(); r == resource && s == state {
				return true
			}
		}
		return false
	}, func() string { return briefEvents(f.seen()) + "\nstderr: " + f.stderr.String() })
}

// stop interrupts the follower as Ctrl-C would, and returns its exit status.
func (f *follower) stop() int {
	f.t.Helper()
	f.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		f.t.Fatalf("%s's follower did not end within 10s of SIGINT", f.who)
	}
	return f.cmd.ProcessState.ExitCode()
}

// briefEvents is one line per event: sequence, kind, resource, state, account.
func briefEvents(evs []api.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		kind, r, s := ev.Summary()
		fmt.Fprintf(&b, "%d %s %s %s (%s)\n", ev.Sequence, kind, r, s, ev.Account)
	}
	return b.String()
}

// jsonLines decodes kiln events -o json's output.
func jsonLines(t *testing.T, out string) []api.Event {
	t.Helper()
	var evs []api.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var ev api.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("not an event line: %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// detailKeys are the keys of each detail type, as EventBridge's EC2 and EBS events
// carry them (a volume's attach and detach add kiln's instance-id and device).
var detailKeys = map[string][]string{
	api.DetailTypeImage:    {"ErrorMessage", "ImageId", "RequestId", "State"},
	api.DetailTypeInstance: {"instance-id", "state"},
	api.DetailTypeVolume:   {"cause", "event", "request-id", "result"},
	api.DetailTypeSnapshot: {"cause", "endTime", "event", "request-id", "result", "snapshot_id", "source", "startTime"},
}

// TestEvents is the acceptance of the event log: `kiln events --follow` in a
// process of its own while alice registers, launches, stops, terminates and deregisters
// prints every event, in order, in EventBridge's shapes, the same as the log read after;
// bob, following too, sees none of them, an administrator all; after a kilnd restart
// --since returns them all again; with a retention of 3 events, a reader resuming after
// a pruned one is told how many it lost (stderr, a notice line, exit status 1).
func TestEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	k, users := accountsKilnd(t)
	alice, bob, erin := users["alice"], users["bob"], users["erin"]
	start := time.Now()

	fa, fb := follow(t, alice), follow(t, bob)
	g := guestCopy(t)
	img := alice.ok(append([]string{"image", "register", "events-image", "--wait", "-q"}, g.RegisterFlags()...)...)
	inst := alice.ok("run", img, "--type", "nano", "--wait", "-q")
	alice.ok("stop", "--wait", inst)
	alice.ok("terminate", "--wait", inst)
	alice.ok("image", "deregister", img)
	fa.waitFor(img, "deregistered")

	// The follower printed what the log holds, all of it, in the same order.
	logged := jsonLines(t, alice.ok("events", "-o", "json"))
	followed := fa.seen()
	ids := func(evs []api.Event) []string {
		var out []string
		for _, ev := range evs {
			out = append(out, fmt.Sprintf("%d/%s", ev.Sequence, ev.ID))
		}
		return out
	}
	if !slices.Equal(ids(followed), ids(logged)) {
		t.Errorf("the follower printed\n%s\nthe log holds\n%s", briefEvents(followed), briefEvents(logged))
	}
	t.Logf("alice's events:\n%s", briefEvents(logged))

	// In order, in the documented shapes, all alice's.
	states := map[string][]string{} // resource: the states it entered, in order
	at := map[string]int{}          // "resource state": its place
	var snap string
	for i, ev := range logged {
		if i > 0 && ev.Sequence <= logged[i-1].Sequence {
			t.Errorf("event %d has sequence %d after %d", i, ev.Sequence, logged[i-1].Sequence)
		}
		if ev.Version != "0" || ev.Source != api.EventSource || ev.Account != "alice" || ev.Region != api.DefaultRegion ||
			len(ev.ID) != 36 || len(ev.Resources) != 1 || ev.Time.Before(start) {
			t.Errorf("envelope of event %d: %+v", ev.Sequence, ev)
		}
		var detail map[string]any
		if err := json.Unmarshal(ev.Detail, &detail); err != nil {
			t.Fatalf("detail of event %d: %v", ev.Sequence, err)
		}
		var keys []string
		for k := range detail {
			if ev.DetailType == api.DetailTypeVolume && (k == "instance-id" || k == "device") {
				continue // kiln's, on an attach or detach
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if want, ok := detailKeys[ev.DetailType]; !ok || !slices.Equal(keys, want) {
			t.Errorf("event %d (%s): detail keys %v, want %v", ev.Sequence, ev.DetailType, keys, want)
		}
		kind, r, s := ev.Summary()
		if !strings.HasSuffix(ev.Resources[0], ":"+kind+"/"+r) {
			t.Errorf("event %d: resource %s is not %s %s's", ev.Sequence, ev.Resources[0], kind, r)
		}
		if kind == api.EventKindSnapshot {
			snap = r
		}
		states[r] = append(states[r], s)
		at[r+" "+s] = i
	}
	for r, want := range map[string][]string{
		img:  {"pending", "available", "deregistered"},
		inst: {"pending", "running", "stopping", "stopped", "shutting-down", "terminated"},
		snap: {"succeeded", "deleted"},
	} {
		if !slices.Equal(states[r], want) {
			t.Errorf("%s entered %v, want %v", r, states[r], want)
		}
	}
	var vol string
	for r := range states {
		if strings.HasPrefix(r, "vol-") {
			vol = r
		}
	}
	if want := []string{"available", "attached", "deleted"}; !slices.Equal(states[vol], want) {
		t.Errorf("the root volume %q: %v, want %v", vol, states[vol], want)
	}
	for _, before := range [][2]string{
		{snap + " succeeded", img + " available"},
		{img + " available", inst + " pending"},
		{vol + " attached", inst + " running"},
		{inst + " terminated", img + " deregistered"},
	} {
		if at[before[0]] >= at[before[1]] {
			t.Errorf("%s came after %s", before[0], before[1])
		}
	}

	// Each user sees the events of what is theirs: bob none, an administrator alice's.
	if got := fb.seen(); len(got) != 0 {
		t.Errorf("bob's follower printed alice's events:\n%s", briefEvents(got))
	}
	if out := bob.ok("events", "-o", "json"); out != "" {
		t.Errorf("bob's events: %s", out)
	}
	if got := ids(jsonLines(t, erin.ok("events", "-o", "json", "--filter", "resource="+inst))); len(got) != 6 {
		t.Errorf("the administrator sees %d of alice's instance's 6 events", len(got))
	}
	if got := alice.ok("events", "--filter", "type=image", "-q"); got != strings.Repeat(img+"\n", 2)+img {
		t.Errorf("alice's image events, -q: %q", got)
	}
	for _, f := range []*follower{fa, fb} {
		if code := f.stop(); code != 0 || len(f.bad) != 0 {
			t.Errorf("%s's follower: exit %d, lines not events %q, stderr %q", f.who, code, f.bad, f.stderr.String())
		}
	}

	// After a restart the log is there: --since returns the same events.
	k.Restart()
	if again := jsonLines(t, alice.ok("events", "-o", "json", "--since", start.Format(time.RFC3339Nano))); !slices.Equal(ids(again), ids(logged)) {
		t.Errorf("after a restart --since gives\n%s\nwant\n%s", briefEvents(again), briefEvents(logged))
	}

	// With a retention of 3 events, a reader resuming after the first is told what it
	// lost, and exits with status 1 once it printed what is kept.
	k.Stop()
	if err := os.WriteFile(k.Config, []byte(`{"events": {"maxEvents": 3}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	k.Start()
	first, last := logged[0].Sequence, logged[len(logged)-1].Sequence
	out, errs, code := alice.kiln("events", "-o", "json", "--after", fmt.Sprint(first))
	got := jsonLines(t, out)
	wantLost := last - 3 - first
	if code != 1 || !strings.Contains(errs, fmt.Sprintf("kiln: %d events lost", wantLost)) {
		t.Errorf("resuming after %d: exit %d, stderr %q; want exit 1 and %d events lost", first, code, errs, wantLost)
	}
	if len(got) != 4 || got[0].DetailType != api.DetailTypeLost || !slices.Equal(ids(got[1:]), ids(logged[len(logged)-3:])) {
		t.Fatalf("resuming after %d printed\n%s\nwant a lost notice, then the last 3 events", first, briefEvents(got))
	}
	var lost api.EventsLost
	json.Unmarshal(got[0].Detail, &lost)
	if lost.After != first || lost.Resume != last-2 || lost.Missed != wantLost || got[0].Sequence != last-3 {
		t.Errorf("the notice: %+v (sequence %d); want after %d, resume %d, missed %d", lost, got[0].Sequence, first, last-2, wantLost)
	}
	if _, errs, code := alice.kiln("events", "--since", start.Format(time.RFC3339Nano)); code != 1 || !strings.Contains(errs, "events lost") {
		t.Errorf("--since the start, after the prune: exit %d, stderr %q; want exit 1 and events lost", code, errs)
	}
}
