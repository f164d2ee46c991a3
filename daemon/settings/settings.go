package settings

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/daemon/quota"
)

// Settings are kilnd's settings file (JSON), read at start and on SIGHUP.
type Settings struct {
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
	Quotas quota.Settings `json:"quotas,omitempty"`
	// Limits bound what callers may hold of kilnd (timeouts, connections, passed
	// descriptors). The timeouts are read at start only.
	Limits Limits `json:"limits,omitempty"`
	// ConsoleLimitMiB bounds what each instance's serial console keeps, on disk and
	// for readers: its last this many MiB (default DefaultConsoleLimitMiB; 0 means the
	// default).
	ConsoleLimitMiB int `json:"consoleLimitMiB,omitempty"`
	// EC2 is kilnd's EC2 endpoint, read at start only.
	EC2 EC2 `json:"ec2,omitempty"`
}

// EC2 configures the EC2 Query API endpoint (off unless Listen or --ec2-listen is given).
type EC2 struct {
	// Listen is host:port, or a bare port (loopback). The command line's --ec2-listen wins.
	Listen string `json:"listen,omitempty"`
	// Region is the region the endpoint is (default kiln-local-1); its one availability
	// zone is the region's name with "a".
	Region string `json:"region,omitempty"`
	// CertFile and KeyFile (PEM) make the endpoint HTTPS.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
}

// regionName is what a region's name may be.
var regionName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// Default groups.
const (
	DefaultAdminGroup  = "kiln-admin"
	DefaultSocketGroup = "kiln"
)

// Admins is the group whose members administer kiln.
func (st *Settings) Admins() string {
	if st.AdminGroup != "" {
		return st.AdminGroup
	}
	return DefaultAdminGroup
}

// SocketGroupOrDefault is the group that owns the socket of a system kilnd.
func (st *Settings) SocketGroupOrDefault() string {
	if st.SocketGroup != "" {
		return st.SocketGroup
	}
	return DefaultSocketGroup
}

// Load reads the settings file at path (none when path is empty; a missing file means
// the defaults) and applies its log level unless levelFixed (the command line gave
// one). A malformed file is an error and changes nothing.
func Load(ctx context.Context, path string, levelFixed bool) (*Settings, error) {
	st := &Settings{}
	if path == "" {
		return st, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("settings %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(st); err != nil {
		return nil, fmt.Errorf("settings %s: %v (want JSON such as {\"logLevel\": \"debug\"}; see docs/settings.md): %w", path, err, errdefs.ErrInvalidArgument)
	}
	switch st.Accelerator {
	case "", "auto", "kvm", "tcg":
	default:
		return nil, fmt.Errorf("settings %s: accelerator %q: want auto, kvm or tcg: %w", path, st.Accelerator, errdefs.ErrInvalidArgument)
	}
	if st.ConsoleLimitMiB < 0 || st.ConsoleLimitMiB > MaxConsoleLimitMiB {
		return nil, fmt.Errorf("settings %s: consoleLimitMiB is %d: want 1 to %d, or 0 for the default (%d): %w",
			path, st.ConsoleLimitMiB, MaxConsoleLimitMiB, DefaultConsoleLimitMiB, errdefs.ErrInvalidArgument)
	}
	if (st.EC2.CertFile == "") != (st.EC2.KeyFile == "") {
		return nil, fmt.Errorf("settings %s: ec2: give both certFile and keyFile, or neither: %w", path, errdefs.ErrInvalidArgument)
	}
	if r := st.EC2.Region; r != "" && !regionName.MatchString(r) {
		return nil, fmt.Errorf("settings %s: ec2.region %q: want lowercase letters, digits and dashes, such as kiln-local-1: %w", path, r, errdefs.ErrInvalidArgument)
	}
	if err := st.Limits.check(); err != nil {
		return nil, fmt.Errorf("settings %s: %w", path, err)
	}
	if err := st.Quotas.Check(); err != nil {
		return nil, fmt.Errorf("settings %s: %w", path, err)
	}
	if st.LogLevel != "" && !levelFixed {
		if err := log.SetLevel(st.LogLevel); err != nil {
			return nil, fmt.Errorf("settings %s: logLevel %q: want debug, info, warn or error: %w", path, st.LogLevel, errdefs.ErrInvalidArgument)
		}
		log.G(ctx).WithField("path", path).Debugf("log level %s", st.LogLevel)
	}
	return st, nil
}

// The console limit: consoleLimitMiB in the settings file.
const (
	DefaultConsoleLimitMiB = 8
	MaxConsoleLimitMiB     = 1024
)

// ConsoleLimit is how many of a console's last bytes kilnd keeps.
func (st *Settings) ConsoleLimit() int64 {
	if st.ConsoleLimitMiB > 0 {
		return int64(st.ConsoleLimitMiB) << 20
	}
	return DefaultConsoleLimitMiB << 20
}
