package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/sirupsen/logrus"

	"kiln/daemon"
	"kiln/daemon/client"
)

// about is the paragraph kilnd --help opens with.
const about = `kilnd is kiln's daemon: it keeps a store of machine images (qcow2 layers, an OCI
manifest, a block device mapping) under its root and boots QEMU instances from them (KVM
when a probe guest proves it runs, else TCG), serving kiln's API on a Unix socket to the
kiln CLI. Under systemd it takes the socket kilnd.socket passes and logs to the journal.
SIGHUP re-reads the settings file; SIGINT and SIGTERM stop kilnd and leave the instances
running, for the next kilnd to reattach.`

// docs is where kilnd --help sends its reader.
const docs = `The settings file (log level, accelerator, groups, quotas, limits) is described in
docs/settings.md, the data root in docs/layout.md and the API in docs/api.md: in kiln's
source, and installed in share/doc/kiln/docs/ (make install).`

// logOptions is how kilnd logs: --log-level and --log-format.
type logOptions struct {
	level  logrus.Level
	format string // text or json
}

// metavars name each flag's value in the usage.
var metavars = map[string]string{
	"root":       "DIR",
	"socket":     "PATH",
	"config":     "FILE",
	"accel":      "auto|kvm|tcg",
	"log-level":  "LEVEL",
	"ec2-listen": "ADDRESS",
	"log-format": "text|json",
}

// parseArgs parses kilnd's command line. code is -1 when kilnd is to run; else kilnd
// exits with code, having printed the usage to stdout (--help: 0) or a one-line error
// and a hint to stderr (a usage error: 2).
func parseArgs(args []string, stdout, stderr io.Writer) (cfg daemon.Config, logs logOptions, code int) {
	cfg = daemon.Config{Version: version}
	fs := flag.NewFlagSet("kilnd", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the errors and the usage are ours
	fs.StringVar(&cfg.Root, "root", defaultRoot(), "the store's directory")
	fs.StringVar(&cfg.Socket, "socket", client.DefaultSocket(), "the API socket (the default follows $KILN_SOCKET, as kiln's does)")
	fs.StringVar(&cfg.SettingsFile, "config", defaultSettings(), "the settings file (JSON, re-read on SIGHUP); a missing one means the defaults")
	fs.StringVar(&cfg.Accelerator, "accel", "", "accelerator: auto (KVM when a probe guest runs under it, else TCG), kvm or tcg; default: the settings file's, else auto")
	fs.StringVar(&cfg.EC2Listen, "ec2-listen", "", "answer EC2's Query API (aws CLI, SDKs) at HOST:PORT, or PORT on loopback, such as 127.0.0.1:8773; default: the settings file's ec2.listen, else off")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error; wins over the settings file's")
	format := fs.String("log-format", "text", "log format (under systemd: the journal, with fields)")

	usageErr := func(format string, a ...any) (daemon.Config, logOptions, int) {
		fmt.Fprintf(stderr, "kilnd: %s\nRun 'kilnd --help' for usage.\n", fmt.Sprintf(format, a...))
		return cfg, logs, 2
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		printUsage(stdout, fs)
		return cfg, logs, 0
	} else if err != nil {
		return usageErr("%v", err)
	}
	fs.Visit(func(f *flag.Flag) { cfg.LogLevelFixed = cfg.LogLevelFixed || f.Name == "log-level" })
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	switch cfg.Accelerator {
	case "", "auto", "kvm", "tcg":
	default:
		return usageErr("--accel %q: want auto, kvm or tcg", cfg.Accelerator)
	}
	var err error
	if logs.level, err = logrus.ParseLevel(*level); err != nil {
		return usageErr("--log-level %q: want debug, info, warn or error", *level)
	}
	switch logs.format = *format; logs.format {
	case "text", "json":
	default:
		return usageErr("--log-format %q: want text or json", *format)
	}
	return cfg, logs, -1
}

// printUsage prints kilnd --help: what kilnd is, how to call it, its flags (with
// their double-dash names; Go's flag package takes -x as well) and where the docs are.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "%s\n\nUsage:\n  kilnd [flags]\n\nFlags:\n", about)
	type row struct{ name, usage string }
	rows := []row{{"-h, --help", "print this help"}}
	width := len(rows[0].name)
	fs.VisitAll(func(f *flag.Flag) {
		meta := metavars[f.Name]
		if meta == "" {
			meta = "VALUE"
		}
		usage := f.Usage
		if f.DefValue != "" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		r := row{fmt.Sprintf("    --%s %s", f.Name, meta), usage}
		rows = append(rows, r)
		width = max(width, len(r.name))
	})
	for _, r := range rows {
		lines := wrap(r.usage, 88-width-4)
		fmt.Fprintf(w, "  %-*s  %s\n", width, r.name, lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "  %-*s  %s\n", width, "", l)
		}
	}
	fmt.Fprintf(w, "\n%s\n", docs)
}

// wrap breaks s into lines of at most n bytes where it can (a longer word keeps its
// own line).
func wrap(s string, n int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		if line != "" && len(line)+1+len(word) > n {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}
