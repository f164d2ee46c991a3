package kilntest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// GuestDeadline bounds every wait on the test guest (ready, a console line, stopped, a
// capture): a guest that is not there by then fails its test with the evidence, never
// sits. The guest is ready in well under a minute under TCG on a loaded 2-core host.
const GuestDeadline = 2 * time.Minute

// DebianDeadline bounds a wait on the Debian test guest: systemd and cloud-init under
// TCG take about 40 s on an idle machine of this kind and over two minutes on a busy one.
const DebianDeadline = 6 * time.Minute

// GuestContext is a context for one wait on the guest: it ends after GuestDeadline, or
// with the test.
func GuestContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), GuestDeadline)
	t.Cleanup(cancel)
	return ctx
}

// pollEvery is how often Poll and Console.Wait look again.
const pollEvery = 50 * time.Millisecond

// Poll calls cond until it is true. After d it fails the test saying what it waited for
// and, when evidence is not nil, what evidence shows. Call it from the test's goroutine.
func Poll(t testing.TB, d time.Duration, what string, cond func() bool, evidence func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			if evidence != nil {
				t.Fatalf("%s: not within %s\n%s", what, d, evidence())
			}
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(pollEvery)
	}
}

// Console is a guest's serial console as a test waits on it.
type Console struct {
	// Path is the console file (QEMU's console.log). Wait reads it unless Read is set.
	Path string
	// Read, when set, reads the console another way (through kilnd's API).
	Read func() (string, error)
	// Exited, when set, is closed once QEMU is gone: a wait for what is not there yet
	// then fails at once.
	Exited <-chan struct{}
	// Evidence is what a failed wait shows; Evidence(dir of Path) when nil.
	Evidence func() string
}

// Wait waits until the console holds want at least n times and returns its text (\r
// removed). It fails the test after GuestDeadline, or once QEMU has exited without
// printing it, saying what it waited for with the console's tail and QEMU's log.
func (c Console) Wait(t testing.TB, want string, n int) string {
	t.Helper()
	deadline := time.Now().Add(GuestDeadline)
	for {
		// Exited is looked at before the console is read: a line printed just before
		// QEMU ended is seen.
		exited := false
		if c.Exited != nil {
			select {
			case <-c.Exited:
				exited = true
			default:
			}
		}
		s, err := c.text()
		s = strings.ReplaceAll(s, "\r", "")
		if err == nil && strings.Count(s, want) >= n {
			return s
		}
		switch {
		case exited:
			t.Fatalf("QEMU exited before %q was %d times on the console\n%s", want, n, c.evidence())
		case time.Now().After(deadline):
			t.Fatalf("%q not %d times on the console within %s (last read: %v)\n%s", want, n, GuestDeadline, err, c.evidence())
		}
		time.Sleep(pollEvery)
	}
}

func (c Console) text() (string, error) {
	if c.Read != nil {
		return c.Read()
	}
	b, err := os.ReadFile(c.Path)
	return string(b), err
}

func (c Console) evidence() string {
	if c.Evidence != nil {
		return c.Evidence()
	}
	return Evidence(filepath.Dir(c.Path))
}
