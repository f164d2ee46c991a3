package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"kiln/builder"
	"kiln/hypervisor"
	"kiln/images"
	"kiln/systemd"
	"kiln/volumes"
)

// Config is kilnd's configuration.
type Config struct {
	Root       string      // the store's directory
	Socket     string      // the API socket's path
	SocketMode os.FileMode // default 0660 for root (group access), 0600 for a user
	Version    string      // reported by /v1/info
	KVMDevice  string      // default /dev/kvm
	// Accelerator is auto (the default: KVM only when a probe guest runs under it), kvm
	// or tcg. The command line's --accel; when empty, the settings file's.
	Accelerator string
	QemuImg     string // the qemu-img binary; default from PATH
	Qemu        string // the qemu-system-x86_64 binary; default from PATH
	// Ready, when set, is called once the daemon serves.
	Ready func()
	// Listener, when set, is the API socket already open (socket activation); Socket
	// then only names it.
	Listener net.Listener
	// SettingsFile is read at start and on each value from Reload (SIGHUP); a missing
	// file means the defaults. Each value from Reload also reopens the audit trail
	// (AuditFile), for log rotation.
	SettingsFile string
	Reload       <-chan struct{}
	// LogLevelFixed keeps the log level given on the command line over the file's.
	LogLevelFixed bool
}

// shutdownTimeout bounds how long kilnd waits for requests and operations on stop.
const shutdownTimeout = 10 * time.Second

// Run runs kilnd until ctx is cancelled: it opens the store (failing images a previous
// run left half-made), listens on the socket and serves the API. On cancel it stops
// accepting requests, cancels running operations and waits for them (bounded).
func Run(ctx context.Context, cfg Config) error {
	closeOnExecInherited()
	if cfg.SocketMode == 0 {
		cfg.SocketMode = 0o600
		if os.Geteuid() == 0 {
			cfg.SocketMode = 0o660
		}
	}
	if cfg.KVMDevice == "" {
		cfg.KVMDevice = "/dev/kvm"
	}
	if cfg.Qemu == "" {
		cfg.Qemu = "qemu-system-x86_64"
	}
	// The store's files are kilnd's alone (0600, directories 0700): layers may hold
	// secrets, and callers reach content only through the API.
	syscall.Umask(0o077)
	store, err := images.Open(ctx, cfg.Root)
	if err != nil {
		return err
	}
	defer store.Close()

	st, err := loadSettings(ctx, cfg)
	if err != nil {
		return err
	}
	choice := cfg.Accelerator
	if choice == "" {
		choice = st.Accelerator
	}
	accel, err := chooseAccelerator(ctx, cfg, choice)
	if err != nil {
		return err
	}
	l := log.G(ctx).WithField("path", cfg.Root)
	ln := cfg.Listener
	if ln == nil {
		if ln, err = Listen(cfg.Socket, cfg.SocketMode, socketGID(ctx, st.socketGroup(), cfg.SocketMode)); err != nil {
			return err
		}
	} else {
		l = l.WithField("activated", true)
	}
	return serve(ctx, cfg, st, store, accel, ln, l)
}

// accelerator is the accelerator kilnd runs guests with, chosen once at start, and why.
type accelerator struct{ name, reason string }

// chooseAccelerator makes the operator's choice (auto, kvm or tcg) and logs it with its
// reason: at Info when it is what was asked for, at Warn when auto fell back to TCG
// though /dev/kvm exists (a host whose KVM cannot run a kernel).
func chooseAccelerator(ctx context.Context, cfg Config, choice string) (accelerator, error) {
	// The probe runs as machines do (qemuUsers), so that KVM is chosen only when their
	// QEMU can open it.
	probeUser := newQEMUUsers(hypervisor.AccelKVM, cfg.KVMDevice).user(0)
	p := hypervisor.Prober{Qemu: cfg.Qemu, KVMDevice: cfg.KVMDevice, User: &probeUser}
	name, reason, err := p.Choose(ctx, choice)
	switch {
	case err != nil && choice == hypervisor.AccelKVM:
		return accelerator{}, fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
	case err != nil:
		return accelerator{}, fmt.Errorf("%w (give --accel auto, kvm or tcg, or \"accelerator\" in the settings file): %w", err, errdefs.ErrInvalidArgument)
	}
	l := log.G(ctx).WithField("accelerator", name).WithField("reason", reason)
	if _, statErr := os.Stat(cfg.KVMDevice); name == hypervisor.AccelTCG && statErr == nil && choice != hypervisor.AccelTCG {
		l.Warn("KVM is not usable here: guests run under TCG (slower)")
	} else {
		l.Info("accelerator chosen")
	}
	return accelerator{name, reason}, nil
}

// socketGID is the group a system kilnd gives its socket when the mode lets a group
// in: the configured one, or none (-1) when kilnd is not root or the group does not
// exist, which it says.
func socketGID(ctx context.Context, group string, mode os.FileMode) int {
	if os.Geteuid() != 0 || mode&0o070 == 0 {
		return -1
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		log.G(ctx).WithField("group", group).Warn("the socket's group does not exist, so only root can use kiln; " +
			"create it (groupadd --system " + group + ") and add users to it, or name another with socketGroup in the settings file")
		return -1
	}
	gid, _ := strconv.Atoi(g.Gid)
	return gid
}

func serve(ctx context.Context, cfg Config, st *settings, store *images.Store, accel accelerator, ln net.Listener, l *log.Entry) (err error) {
	opsCtx, cancelOps := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelOps()
	s := &server{
		cfg:      cfg,
		store:    store,
		builder:  &builder.Builder{Store: store, Tool: volumes.Tool{Path: cfg.QemuImg}},
		accel:    accel.name,
		accelWhy: accel.reason,
		uid:      uint32(os.Getuid()),
		opsCtx:   opsCtx,
		running:  map[string]*imageOp{},
	}
	s.settings.Store(st)
	if s.audit, err = openAudit(cfg.Root); err != nil {
		return err
	}
	defer s.audit.Close()
	if s.inst, err = newInstances(ctx, s); err != nil {
		return err
	}
	s.inst.placer = choosePlacer(ctx)
	s.inst.reconcile(ctx) // before serving: a client never sees a stale state
	// A kilnd killed during a register leaves its export's socket directory behind
	// (volumes.Tool.SocketDir); nothing uses one before kilnd serves.
	leftovers, _ := filepath.Glob(filepath.Join(cfg.Root, "run", "nbd-*"))
	for _, dir := range leftovers {
		os.RemoveAll(dir)
	}
	s.ops.Go(func() { s.trimConsoles(opsCtx) })
	// No ReadTimeout: net/http would cancel a long request (an event stream, a wait)
	// when it passed; the route bounds each body instead (bodyDeadline).
	lim := st.Limits.resolved()
	hs := &http.Server{
		Handler:           s.routes(),
		ConnContext:       withCaller,
		ReadHeaderTimeout: seconds(lim.ReadHeaderSeconds),
		IdleTimeout:       seconds(lim.IdleSeconds),
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	limiter := newLimiter(s.uid, func() (LimitSettings, string) {
		st := s.settings.Load()
		return st.Limits, st.adminGroup()
	})
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(withFiles(ln, limiter)) }()
	l.WithField("socket", cfg.Socket).WithField("accelerator", accel.name).WithField("units", s.inst.placer.Kind()).Info("kilnd serving")
	systemd.Ready(s.status())
	if cfg.Ready != nil {
		cfg.Ready()
	}
	wctx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go systemd.Watchdog(wctx)
	statusTick := time.NewTicker(10 * time.Second)
	defer statusTick.Stop()

serving:
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("serve %s: %w", cfg.Socket, err)
		case <-ctx.Done():
			break serving
		case <-statusTick.C:
			systemd.Status(s.status())
		case <-cfg.Reload:
			systemd.Reloading()
			if st, err := loadSettings(ctx, cfg); err != nil {
				l.WithError(err).Error("reload: settings kept as they were")
			} else {
				s.settings.Store(st)
				l.Info("settings reloaded")
			}
			// Whatever the settings file holds, a SIGHUP is also how logrotate says
			// it renamed the trail away.
			if err := s.audit.reopen(); err != nil {
				l.WithError(err).Error("reload: the audit trail goes on in the file it had")
			}
			systemd.Ready(s.status())
		}
	}
	systemd.Stopping()
	l.Info("kilnd stopping")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err = hs.Shutdown(sctx)
	cancelOps()
	done := make(chan struct{})
	go func() { s.ops.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		err = errors.Join(err, errors.New("operations did not stop in time"))
	}
	return err
}

// closeOnExecInherited marks every descriptor kilnd inherited past stdio close-on-exec
// (a shell or service manager may leave some open), so that none reaches a QEMU or a
// caller's qemu-nbd: those get only what kilnd passes them. Socket activation's
// descriptors stay usable by kilnd itself.
func closeOnExecInherited() {
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}
