package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/systemd"
)

// settings is kilnd's settings file (JSON), read at start and on SIGHUP.
type settings struct {
	// LogLevel is debug, info, warn or error; the command line's --log-level wins.
	LogLevel string `json:"logLevel,omitempty"`
	// AdminGroup is the group whose members administer kiln, as root does; default
	// kiln-admin.
	AdminGroup string `json:"adminGroup,omitempty"`
	// SocketGroup owns the socket of a system kilnd (mode 0660); default kiln. It is
	// read at start only.
	SocketGroup string `json:"socketGroup,omitempty"`
	// Accelerator is auto (the default), kvm or tcg; the command line's --accel wins.
	// It is read at start only: the probe runs once.
	Accelerator string `json:"accelerator,omitempty"`
	// Quotas bound what each user may have.
	Quotas QuotaSettings `json:"quotas,omitempty"`
	// Limits bound what callers may hold of kilnd (timeouts, connections, passed
	// descriptors). The timeouts are read at start only.
	Limits LimitSettings `json:"limits,omitempty"`
	// ConsoleLimitMiB bounds what each instance's serial console keeps, on disk and
	// for readers: its last this many MiB (default DefaultConsoleLimitMiB; 0 means the
	// default).
	ConsoleLimitMiB int `json:"consoleLimitMiB,omitempty"`
}

// Default groups.
const (
	DefaultAdminGroup  = "kiln-admin"
	DefaultSocketGroup = "kiln"
)

func (st *settings) adminGroup() string {
	if st.AdminGroup != "" {
		return st.AdminGroup
	}
	return DefaultAdminGroup
}

func (st *settings) socketGroup() string {
	if st.SocketGroup != "" {
		return st.SocketGroup
	}
	return DefaultSocketGroup
}

// loadSettings reads cfg.SettingsFile (a missing one means the defaults) and applies
// its log level. A malformed file is an error and changes nothing.
func loadSettings(ctx context.Context, cfg Config) (*settings, error) {
	st := &settings{}
	if cfg.SettingsFile == "" {
		return st, nil
	}
	b, err := os.ReadFile(cfg.SettingsFile)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("settings %s: %w", cfg.SettingsFile, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(st); err != nil {
		return nil, fmt.Errorf("settings %s: %v (want JSON such as {\"logLevel\": \"debug\"}; see docs/settings.md): %w", cfg.SettingsFile, err, errdefs.ErrInvalidArgument)
	}
	switch st.Accelerator {
	case "", "auto", "kvm", "tcg":
	default:
		return nil, fmt.Errorf("settings %s: accelerator %q: want auto, kvm or tcg: %w", cfg.SettingsFile, st.Accelerator, errdefs.ErrInvalidArgument)
	}
	if st.ConsoleLimitMiB < 0 || st.ConsoleLimitMiB > MaxConsoleLimitMiB {
		return nil, fmt.Errorf("settings %s: consoleLimitMiB is %d: want 1 to %d, or 0 for the default (%d): %w",
			cfg.SettingsFile, st.ConsoleLimitMiB, MaxConsoleLimitMiB, DefaultConsoleLimitMiB, errdefs.ErrInvalidArgument)
	}
	if err := st.Limits.check(); err != nil {
		return nil, fmt.Errorf("settings %s: %w", cfg.SettingsFile, err)
	}
	if err := st.Quotas.check(); err != nil {
		return nil, fmt.Errorf("settings %s: %w", cfg.SettingsFile, err)
	}
	if st.LogLevel != "" && !cfg.LogLevelFixed {
		if err := log.SetLevel(st.LogLevel); err != nil {
			return nil, fmt.Errorf("settings %s: logLevel %q: want debug, info, warn or error: %w", cfg.SettingsFile, st.LogLevel, errdefs.ErrInvalidArgument)
		}
		log.G(ctx).WithField("path", cfg.SettingsFile).Debugf("log level %s", st.LogLevel)
	}
	return st, nil
}

// placer puts an instance's QEMU where the host keeps its processes: a systemd scope,
// or nowhere special (detached in its own session).
type placer interface {
	Place(ctx context.Context, id string, pid, cpus, memoryMiB int) error
	Kind() string
}

// detached is the placer without systemd.
type detached struct{}

func (detached) Place(context.Context, string, int, int, int) error { return nil }
func (detached) Kind() string                                       { return "detached" }

// choosePlacer uses systemd scopes when systemd's D-Bus answers, detached processes
// otherwise.
func choosePlacer(ctx context.Context) placer {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := systemd.ConnectScopes(ctx, os.Geteuid() != 0)
	if err != nil {
		log.G(ctx).WithError(err).Debug("instances run detached")
		return detached{}
	}
	return s
}

// status is the line systemd shows for kilnd.
func (s *server) status() string {
	running := 0
	for _, rec := range s.inst.list(false, func(string) bool { return true }) {
		if rec.State == stateRunning {
			running++
		}
	}
	s.mu.Lock()
	ops := len(s.running)
	s.mu.Unlock()
	return fmt.Sprintf("%d instances running, %d operations in flight", running, ops)
}
