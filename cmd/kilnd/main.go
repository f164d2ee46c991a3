package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/containerd/log"

	"kiln/daemon"
	"kiln/daemon/client"
	"kiln/systemd"
)

// version is stamped by the Makefile.
var version = "dev"

func main() {
	cfg := daemon.Config{Version: version}
	fs := flag.NewFlagSet("kilnd", flag.ContinueOnError)
	fs.StringVar(&cfg.Root, "root", defaultRoot(), "the store's directory")
	fs.StringVar(&cfg.Socket, "socket", client.DefaultSocket(), "the API socket")
	fs.StringVar(&cfg.SettingsFile, "config", defaultSettings(), "settings file (JSON, re-read on SIGHUP); a missing one means the defaults")
	fs.StringVar(&cfg.Accelerator, "accel", "", "accelerator: auto (KVM when a probe guest runs under it, else TCG), kvm or tcg; default the settings file's, else auto")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error (wins over the settings file)")
	format := fs.String("log-format", "text", "log format: text or json (under systemd: the journal)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	fs.Visit(func(f *flag.Flag) { cfg.LogLevelFixed = cfg.LogLevelFixed || f.Name == "log-level" })
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "kilnd: unexpected argument %q\n", fs.Arg(0))
		os.Exit(2)
	}
	switch cfg.Accelerator {
	case "", "auto", "kvm", "tcg":
	default:
		fmt.Fprintf(os.Stderr, "kilnd: --accel %q: want auto, kvm or tcg\n", cfg.Accelerator)
		os.Exit(2)
	}
	if err := log.SetLevel(*level); err != nil {
		fmt.Fprintf(os.Stderr, "kilnd: --log-level %q: want debug, info, warn or error\n", *level)
		os.Exit(2)
	}
	switch *format {
	case "text":
		_ = log.SetFormat(log.TextFormat)
	case "json":
		_ = log.SetFormat(log.JSONFormat)
	default:
		fmt.Fprintf(os.Stderr, "kilnd: --log-format %q: want text or json\n", *format)
		os.Exit(2)
	}

	if systemd.UnderJournal() {
		systemd.LogToJournal(log.L.Logger, "kilnd")
	}
	ln, err := systemd.Listener(systemd.SocketName)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kilnd: %v\n", err)
		os.Exit(1)
	}
	cfg.Listener = ln

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	reload := make(chan struct{}, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	cfg.Reload = reload
	if err := daemon.Run(ctx, cfg); err != nil {
		log.G(ctx).WithError(err).Error("kilnd stopped")
		stop()
		os.Exit(1)
	}
}

// defaultSettings is /etc/kiln/kilnd.json for root, else $XDG_CONFIG_HOME/kiln/kilnd.json.
func defaultSettings() string {
	if os.Geteuid() == 0 {
		return "/etc/kiln/kilnd.json"
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "kiln", "kilnd.json")
	}
	return ""
}

// defaultRoot is /var/lib/kiln for root, else $XDG_DATA_HOME/kiln (~/.local/share/kiln).
func defaultRoot() string {
	if os.Geteuid() == 0 {
		return "/var/lib/kiln"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "kiln")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "kiln")
}
