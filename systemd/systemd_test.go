package systemd

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	_ "unsafe" // go:linkname journalSocket

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/sirupsen/logrus"

	"kiln/internal/kilntest"
)

// journalSocket is where go-systemd's journal sends: a variable it lets be set only
// when linking (-ldflags -X); the tests point it at their own listener.
//
//go:linkname journalSocket github.com/coreos/go-systemd/v22/journal.journalSocket
var journalSocket string

// journalAt points go-systemd's journal at path for the test.
func journalAt(t *testing.T, path string) {
	old := journalSocket
	journalSocket = path
	t.Cleanup(func() { journalSocket = old })
}

func next(t *testing.T, ch <-chan []byte) []byte {
	t.Helper()
	return kilntest.NextDatagram(t, ch, 5*time.Second, "a datagram")
}

// parseNative reads a journal native-protocol datagram.
func parseNative(t *testing.T, b []byte) map[string]string {
	out := map[string]string{}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			t.Fatalf("unterminated field %q", b)
		}
		line := b[:i]
		b = b[i+1:]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			continue
		}
		n := binary.LittleEndian.Uint64(b[:8])
		out[string(line)] = string(b[8 : 8+n])
		b = b[8+n+1:]
	}
	return out
}

func TestJournal(t *testing.T) {
	path, ch := kilntest.Datagrams(t)
	journalAt(t, path)
	logger := logrus.New()
	logger.SetLevel(logrus.DebugLevel)
	var out bytes.Buffer
	logger.SetOutput(&out)
	LogToJournal(logger, "kilnd")

	logger.WithField("instance", "i-0123456789abcdef0").WithField("dur", time.Second).Warn("instance's QEMU is gone")
	f := parseNative(t, next(t, ch))
	want := map[string]string{"MESSAGE": "instance's QEMU is gone", "PRIORITY": "4", "INSTANCE": "i-0123456789abcdef0", "DUR": "1s", "SYSLOG_IDENTIFIER": "kilnd"}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s = %q, want %q (entry %v)", k, f[k], v, f)
		}
	}
	logger.WithField("_pid", 1).WithField("op", "multi").Error("line one\nline two")
	f = parseNative(t, next(t, ch))
	if f["MESSAGE"] != "line one\nline two" || f["PRIORITY"] != "3" || f["PID"] != "1" || f["_PID"] != "" {
		t.Errorf("multi-line entry: %v", f)
	}
	logger.Debug("quiet")
	if f = parseNative(t, next(t, ch)); f["PRIORITY"] != "7" {
		t.Errorf("debug priority: %v", f)
	}
	if out.Len() != 0 {
		t.Errorf("entries also went to the output: %q", out.String())
	}
}

// lower is a hook that makes the entries of one message Debug (as kilnd's does for
// containerd's notices that are no news).
type lower string

func (lower) Levels() []logrus.Level { return logrus.AllLevels }

func (l lower) Fire(e *logrus.Entry) error {
	if e.Message == string(l) {
		e.Level = logrus.DebugLevel
	}
	return nil
}

// TestJournalLevelAfterHooks: an entry a hook before the journal's made Debug is not
// sent at Info; the next one is.
func TestJournalLevelAfterHooks(t *testing.T) {
	path, ch := kilntest.Datagrams(t)
	journalAt(t, path)
	logger := logrus.New()
	logger.AddHook(lower("no news"))
	LogToJournal(logger, "kilnd")
	logger.Warn("no news")
	logger.Warn("news")
	if f := parseNative(t, next(t, ch)); f["MESSAGE"] != "news" || f["PRIORITY"] != "4" {
		t.Errorf("first entry sent: %v", f)
	}
}

// TestJournalOversized: an entry too big for a datagram (a 1 MiB message, over the
// socket's send buffer) reaches the journal whole, passed as a file descriptor.
func TestJournalOversized(t *testing.T) {
	path, ch := kilntest.Datagrams(t)
	journalAt(t, path)
	logger := logrus.New()
	LogToJournal(logger, "kilnd")
	msg := "a long one\n" + strings.Repeat("0123456789abcdef", 1<<16)
	logger.WithField("instance", "i-0123456789abcdef0").Error(msg)
	f := parseNative(t, next(t, ch))
	if f["MESSAGE"] != msg {
		t.Errorf("a %d-byte message arrived as %d bytes", len(msg), len(f["MESSAGE"]))
	}
	if f["PRIORITY"] != "3" || f["INSTANCE"] != "i-0123456789abcdef0" || f["SYSLOG_IDENTIFIER"] != "kilnd" {
		t.Errorf("fields of the oversized entry: PRIORITY=%q INSTANCE=%q SYSLOG_IDENTIFIER=%q", f["PRIORITY"], f["INSTANCE"], f["SYSLOG_IDENTIFIER"])
	}
}

func TestUnderJournal(t *testing.T) {
	st, err := os.Stderr.Stat()
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	t.Setenv("JOURNAL_STREAM", "")
	if UnderJournal() {
		t.Error("under the journal without JOURNAL_STREAM")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", sys.Dev, sys.Ino))
	if !UnderJournal() {
		t.Error("not under the journal with JOURNAL_STREAM naming stderr")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", sys.Dev, sys.Ino+1))
	if UnderJournal() {
		t.Error("under the journal with JOURNAL_STREAM naming another file")
	}
}

func TestNotify(t *testing.T) {
	path, ch := kilntest.Datagrams(t)
	t.Setenv("NOTIFY_SOCKET", path)
	Ready("serving")
	if got := string(next(t, ch)); got != "READY=1\nSTATUS=serving" {
		t.Errorf("ready: %q", got)
	}
	Stopping()
	if got := string(next(t, ch)); got != "STOPPING=1" {
		t.Errorf("stopping: %q", got)
	}
	Reloading()
	if got := string(next(t, ch)); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("reloading: %q", got)
	}
	t.Setenv("WATCHDOG_USEC", "100000")
	ctx, cancel := context.WithCancel(context.Background())
	go Watchdog(ctx)
	for i := 0; i < 3; i++ {
		if got := string(next(t, ch)); got != "WATCHDOG=1" {
			t.Errorf("watchdog: %q", got)
		}
	}
	cancel()
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, _ := Notify("READY=1"); sent {
		t.Error("sent without NOTIFY_SOCKET")
	}
}

// fakeBus records StartTransientUnit calls as systemd's D-Bus would take them.
type fakeBus struct {
	name, mode string
	props      []sddbus.Property
	result     string
}

func (f *fakeBus) StartTransientUnitContext(_ context.Context, name, mode string, props []sddbus.Property, ch chan<- string) (int, error) {
	f.name, f.mode, f.props = name, mode, props
	ch <- f.result
	return 1, nil
}

func TestScopes(t *testing.T) {
	bus := &fakeBus{result: "done"}
	s := &Scopes{conn: bus}
	if err := s.Place(context.Background(), "i-0123456789abcdef0", 4242, 2, 1024); err != nil {
		t.Fatal(err)
	}
	if bus.name != "kiln-i-0123456789abcdef0.scope" || bus.mode != "fail" {
		t.Errorf("unit %q mode %q", bus.name, bus.mode)
	}
	got := map[string]string{}
	for _, p := range bus.props {
		got[p.Name] = p.Value.String()
	}
	for k, v := range map[string]string{
		"Slice":              `"kiln.slice"`,
		"PIDs":               "@au [4242]",
		"MemoryMax":          "@t 1610612736", // 1024 MiB * 5/4 + 256 MiB
		"CPUQuotaPerSecUSec": "@t 2000000",
		"Description":        `"kiln instance i-0123456789abcdef0"`,
	} {
		if got[k] != v {
			t.Errorf("%s = %s, want %s", k, got[k], v)
		}
	}
	bus.result = "failed"
	if err := s.Place(context.Background(), "i-0123456789abcdef0", 1, 1, 256); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Errorf("a failed job: %v", err)
	}
}

// TestUnitsVerify runs systemd-analyze verify on every unit file, with the binaries in
// place as make install puts them.
func TestUnitsVerify(t *testing.T) {
	kilntest.Need(t, "systemd-analyze")
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if out, err := kilntest.Command(t, "go", "build", "-o", bin+"/", "kiln/cmd/kilnd", "kiln/cmd/kiln").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, mode := range []string{"system", "user"} {
		src := "units"
		if mode == "user" {
			src = "units/user"
		}
		out := filepath.Join(dir, mode)
		os.MkdirAll(out, 0o755)
		var units []string
		for _, name := range []string{"kilnd.service", "kilnd.socket", "kiln.slice", "kiln-instance@.service"} {
			b, err := os.ReadFile(filepath.Join(src, name))
			if err != nil {
				t.Fatal(err)
			}
			b = bytes.ReplaceAll(b, []byte("@BINDIR@"), []byte(bin))
			b = bytes.ReplaceAll(b, []byte("@DOCDIR@"), []byte(dir))
			if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
			units = append(units, strings.Replace(name, "@.", "@web.", 1))
		}
		args := append([]string{"verify"}, units...)
		if mode == "user" {
			args = append([]string{"--user"}, args...)
		}
		cmd := kilntest.Command(t, append([]string{"systemd-analyze"}, args...)...)
		cmd.Dir = out
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+t.TempDir())
		if b, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(b)) > 0 {
			t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
}
