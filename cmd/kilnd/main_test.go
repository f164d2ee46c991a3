package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"kiln/internal/kilntest"
)

// flags are kilnd's flags, each of which --help must show.
var flags = []string{"root", "socket", "config", "accel", "log-level", "log-format"}

// TestHelp: --help (and -h) prints, to stdout, what kilnd is, its usage line, every
// flag by its double-dash name with its default, and where the docs are; kilnd then
// exits 0.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help"} {
		var stdout, stderr bytes.Buffer
		_, _, code := parseArgs([]string{arg}, &stdout, &stderr)
		out := stdout.String()
		if code != 0 || stderr.Len() != 0 {
			t.Errorf("%s: status %d, stderr %q", arg, code, stderr.String())
		}
		for _, want := range []string{"kilnd is kiln's daemon", "Usage:\n  kilnd [flags]\n", "-h, --help", "(default info)", "(default text)", "docs/settings.md"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: no %q in\n%s", arg, want, out)
			}
		}
		for _, f := range flags {
			if !strings.Contains(out, "    --"+f+" ") {
				t.Errorf("%s: no --%s in\n%s", arg, f, out)
			}
		}
		if strings.Contains(out, "Usage of") || strings.Contains(out, "\n  -root") {
			t.Errorf("%s: Go's flag package's usage:\n%s", arg, out)
		}
	}
}

// TestUsageErrors: a bad flag, value or argument is a one-line error and the hint on
// stderr, nothing on stdout, and status 2.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--bogus"},
		{"--root"}, // no value
		{"--accel", "fast"},
		{"--log-level", "loud"},
		{"--log-format", "xml"},
		{"serve"},
	} {
		var stdout, stderr bytes.Buffer
		_, _, code := parseArgs(args, &stdout, &stderr)
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if code != 2 || stdout.Len() != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "kilnd: ") || lines[1] != "Run 'kilnd --help' for usage." {
			t.Errorf("%q: status %d, stdout %q, stderr %q", args, code, stdout.String(), stderr.String())
		}
	}
}

// TestArgs: both -x and --x work; the values reach the daemon's config and the log
// options; --log-level given wins over the settings file.
func TestArgs(t *testing.T) {
	var stdout, stderr bytes.Buffer
	cfg, logs, code := parseArgs([]string{"-root", "/srv/kiln", "--socket=/run/k.sock", "--accel", "tcg", "--log-level", "debug", "-log-format", "json"}, &stdout, &stderr)
	if code != -1 || stdout.Len()+stderr.Len() != 0 {
		t.Fatalf("status %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	if cfg.Root != "/srv/kiln" || cfg.Socket != "/run/k.sock" || cfg.Accelerator != "tcg" || !cfg.LogLevelFixed ||
		logs.level != logrus.DebugLevel || logs.format != "json" {
		t.Errorf("config %+v, log options %+v", cfg, logs)
	}
	if cfg, _, _ := parseArgs(nil, &stdout, &stderr); cfg.LogLevelFixed || cfg.Root == "" || cfg.Socket == "" {
		t.Errorf("defaults: %+v", cfg)
	}
}

// TestExitStatus: the kilnd binary exits 0 on --help and 2 on a bad flag.
func TestExitStatus(t *testing.T) {
	dir, err := kilntest.Build("kiln/cmd/kilnd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "kilnd")
	for _, tc := range []struct {
		arg  string
		code int
	}{{"--help", 0}, {"--bogus", 2}} {
		out, err := kilntest.Command(t, bin, tc.arg).CombinedOutput()
		code := 0
		var xe *exec.ExitError
		if errors.As(err, &xe) {
			code = xe.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("kilnd %s: status %d, want %d\n%s", tc.arg, code, tc.code, out)
		}
	}
}

// TestDemoteNoise: containerd's fsverity notice is logged at Debug (so not at all at
// Info), and every other warning stays a warning.
func TestDemoteNoise(t *testing.T) {
	var out bytes.Buffer
	logger := logrus.New()
	logger.SetOutput(&out)
	logger.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	demoteNoise(logger)

	logger.WithField("path", "/var/lib/kiln/content").Warn("failed check for fsverity support")
	logger.Warn("something else")
	if got, want := out.String(), "level=warning msg=\"something else\"\n"; got != want {
		t.Errorf("at info, logged %q, want %q", got, want)
	}
	out.Reset()
	logger.SetLevel(logrus.DebugLevel)
	logger.WithField("path", "/var/lib/kiln/content").Warn("failed check for fsverity support")
	if got, want := out.String(), "level=debug msg=\"failed check for fsverity support\" path=/var/lib/kiln/content\n"; got != want {
		t.Errorf("at debug, logged %q, want %q", got, want)
	}
}
