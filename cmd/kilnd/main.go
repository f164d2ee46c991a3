package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/containerd/log"

	"kiln/daemon"
	"kiln/systemd"
)

// version is stamped by the Makefile.
var version = "dev"

func main() {
	cfg, logs, code := parseArgs(os.Args[1:], os.Stdout, os.Stderr)
	if code >= 0 {
		os.Exit(code)
	}
	setUpLog(logs)

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
