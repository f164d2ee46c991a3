package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/daemon/audit"
	"kiln/daemon/ec2"
	"kiln/daemon/events"
	"kiln/daemon/imaging"
	"kiln/daemon/imds"
	"kiln/daemon/instances"
	"kiln/daemon/keys"
	"kiln/daemon/machines"
	"kiln/daemon/peer"
	"kiln/daemon/quota"
	"kiln/daemon/record"
	"kiln/daemon/recyclebin"
	"kiln/daemon/settings"
	"kiln/daemon/vols"
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
	// EC2Listen is where the EC2 endpoint listens (--ec2-listen); when empty, the
	// settings file's ec2.listen; when both are, there is none.
	EC2Listen string
	// Now is the clock image lifecycles read (deprecation, protection cooldowns, the
	// recycle bin); when nil, the real one, moved by TestClockEnv's file when set.
	Now func() time.Time
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
	st, err := settings.Load(ctx, cfg.SettingsFile, cfg.LogLevelFixed)
	if err != nil {
		return err
	}
	current := &atomic.Pointer[settings.Settings]{}
	current.Store(st)
	db, err := record.OpenFile(cfg.Root)
	if err != nil {
		return err
	}
	defer db.Close()
	region := cmp.Or(st.EC2.Region, api.DefaultRegion) // read at start only
	events.SetRegion(region)
	evlog, err := events.Open(db, func() events.Retention { return retention(current.Load()) })
	if err != nil {
		return err
	}
	store, err := images.Open(ctx, cfg.Root, db, images.WithWatcher(eventsOf(evlog)))
	if err != nil {
		return err
	}
	rdb, err := record.Open(db, evlog)
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
		if ln, err = peer.Listen(cfg.Socket, cfg.SocketMode, socketGID(ctx, st.SocketGroupOrDefault(), cfg.SocketMode)); err != nil {
			return err
		}
	} else {
		l = l.WithField("activated", true)
	}
	rules, err := recyclebin.Open(db)
	if err != nil {
		return err
	}
	if cfg.Now == nil {
		if cfg.Now, err = testClock(ctx); err != nil {
			return err
		}
	}
	return serve(ctx, cfg, current, store, rdb, evlog, region, rules, accel, ln, l)
}

// retention is the event log's, as the settings say.
func retention(st *settings.Settings) events.Retention {
	e := st.Events.Resolved()
	return events.Retention{Max: e.MaxEvents, MaxAge: time.Duration(e.MaxAgeHours) * time.Hour}
}

// eventsOf is the image store's watcher that records the events of images and
// snapshots in the log.
func eventsOf(log *events.Log) images.Watcher {
	return images.Watcher{
		ImageState: func(tx *bolt.Tx, im *images.Image, _, to images.State) error {
			return log.Append(tx, events.Image(im.ID, im.OwnerID, string(to), im.StateReason))
		},
		Snapshot: func(tx *bolt.Tx, sn *images.Snapshot, created bool) error {
			return log.Append(tx, events.Snapshot(sn.ID, sn.OwnerID, sn.ImageID, created, sn.StartTime))
		},
	}
}

// accelerator is the accelerator kilnd runs guests with, chosen once at start, and why.
type accelerator struct{ name, reason string }

// chooseAccelerator makes the operator's choice (auto, kvm or tcg) and logs it with its
// reason: at Info when it is what was asked for, at Warn when auto fell back to TCG
// though /dev/kvm exists (a host whose KVM cannot run a kernel).
func chooseAccelerator(ctx context.Context, cfg Config, choice string) (accelerator, error) {
	// The probe runs as machines do (machines.Users), so that KVM is chosen only when
	// their QEMU can open it.
	probeUser := machines.NewUsers(hypervisor.AccelKVM, cfg.KVMDevice).User(0)
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
		l.Warn("KVM is not usable here, so guests run under TCG (slower): fix what the reason says, or choose tcg (--accel tcg, or \"accelerator\" in the settings file) to skip the probe and this warning")
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

func serve(ctx context.Context, cfg Config, current *atomic.Pointer[settings.Settings], store *images.Store, db *record.DB, evlog *events.Log, region string, rules *recyclebin.Rules, accel accelerator, ln net.Listener, l *log.Entry) (err error) {
	st := current.Load()
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
		rules:    rules,
		settings: current,
		events:   evlog,
	}
	if s.audit, err = audit.Open(cfg.Root); err != nil {
		return err
	}
	defer s.audit.Close()
	loaded, loadedVols, err := db.Load()
	if err != nil {
		return err
	}
	quotaOf := func(user string) quota.Quota { return s.settings.Load().Quotas.Of(user) }
	s.img = imaging.New(store, s.builder.Tool, s.uid, s.admin, quotaOf)
	s.img.Now = cfg.Now
	layout := record.Layout{Root: cfg.Root}
	s.vols = vols.New(db, layout, store, s.builder.Tool, quotaOf, loadedVols)
	keyPairs, err := db.KeyPairs()
	if err != nil {
		return err
	}
	s.keys = keys.New(db, keyPairs)
	if s.accessKeys, err = ec2.NewKeys(db); err != nil {
		return err
	}
	// The metadata service listens on a loopback address of kilnd's own; the firewall
	// sends each guest's gateway port 80 there, and the service tells instances apart by
	// their QEMU's uid.
	network, firewall, metaLn := machines.SetUpNetwork(ctx, machines.NewUsers(accel.name, cfg.KVMDevice), "nft", cfg.Root)
	s.network = network
	l.WithField("network", network.String()).Info("guests' network")
	var fw instances.Firewall
	if firewall != nil {
		fw = firewall
	}
	s.inst = instances.New(instances.Config{DB: db, Store: store, Builder: s.builder, Qemu: cfg.Qemu, Accel: accel.name,
		KVMDevice: cfg.KVMDevice, Outbound: network.Outbound, Firewall: fw, Root: cfg.Root, Ops: &s.ops, OpsCtx: opsCtx, Placer: choosePlacer(ctx),
		Quota: quotaOf, Imaging: s.img, Vols: s.vols, Loaded: loaded})
	s.inst.Reconcile(ctx) // before serving: a client never sees a stale state
	s.inst.ClaimUsers(ctx)
	s.inst.SyncFirewall(ctx)
	if metaLn != nil {
		// QEMU's connections come redirected from the gateway's port 80 (as the host's
		// loopback), which their sockets still name.
		meta := imds.NewServer(s.metadata, imds.WithRedirectsFrom(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 80)),
			imds.WithZone(api.ZoneOf(region)))
		go func() {
			if err := meta.Serve(metaLn); err != nil {
				l.WithError(err).Error("the metadata service stopped")
			}
		}()
		// At the end, kilnd's table goes first, then the service (defers run last
		// first): another kilnd starting meanwhile never finds the table of a service
		// that has stopped answering.
		defer meta.Close()
		defer func() {
			if err := firewall.Close(context.WithoutCancel(ctx)); err != nil {
				l.WithError(err).Warn("remove kilnd's firewall table")
			}
		}()
	}
	// A kilnd killed during a register leaves its export's socket directory behind
	// (volumes.Tool.SocketDir); nothing uses one before kilnd serves.
	leftovers, _ := filepath.Glob(filepath.Join(cfg.Root, "run", "nbd-*"))
	for _, dir := range leftovers {
		os.RemoveAll(dir)
	}
	s.consoles.Limit = func() int64 { return s.settings.Load().ConsoleLimit() }
	s.ops.Go(func() { s.consoles.Trim(opsCtx, s.inst.Consoles) })
	// No ReadTimeout: net/http would cancel a long request (an event stream, a wait)
	// when it passed; the route bounds each body instead (peer.BodyDeadline).
	lim := st.Limits.Resolved()
	hs := &http.Server{
		Handler:           s.routes(),
		ConnContext:       peer.WithCaller,
		ReadHeaderTimeout: seconds(lim.ReadHeaderSeconds),
		IdleTimeout:       seconds(lim.IdleSeconds),
		MaxHeaderBytes:    maxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	limiter := peer.NewLimiter(s.uid, func() (settings.Limits, string) {
		st := s.settings.Load()
		return st.Limits, st.Admins()
	})
	ec2cfg := EC2Config{Listen: cmp.Or(cfg.EC2Listen, st.EC2.Listen), Region: region, CertFile: st.EC2.CertFile, KeyFile: st.EC2.KeyFile}
	stopEC2, err := s.serveEC2(ctx, db, ec2cfg)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(peer.Listener(ln, limiter)) }()
	l.WithField("socket", cfg.Socket).WithField("accelerator", accel.name).WithField("units", s.inst.Units()).Info("kilnd serving")
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
			if st, err := settings.Load(ctx, cfg.SettingsFile, cfg.LogLevelFixed); err != nil {
				l.WithError(err).Error("reload: settings kept as they were")
			} else {
				s.settings.Store(st)
				l.Info("settings reloaded")
			}
			// Whatever the settings file holds, a SIGHUP is also how logrotate says
			// it renamed the trail away.
			if err := s.audit.Reopen(); err != nil {
				l.WithError(err).Error("reload: the audit trail goes on in the file it had")
			}
			systemd.Ready(s.status())
		}
	}
	systemd.Stopping()
	l.Info("kilnd stopping")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err = errors.Join(hs.Shutdown(sctx), stopEC2(sctx))
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

// maxHeaderBytes bounds a request's line and headers (net/http's default is 1 MiB): an
// id, a name or a filter is short, and every open connection may hold this much.
const maxHeaderBytes = 64 << 10

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }

// detached is the placer without systemd.
type detached struct{}

func (detached) Place(context.Context, string, int, int, int) error { return nil }
func (detached) Kind() string                                       { return "detached" }

// choosePlacer uses systemd scopes when systemd's D-Bus answers, detached processes
// otherwise.
func choosePlacer(ctx context.Context) instances.Placer {
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
	for _, rec := range s.inst.List(false, func(string) bool { return true }) {
		if rec.State == record.StateRunning {
			running++
		}
	}
	return fmt.Sprintf("%d instances running, %d operations in flight", running, s.img.InFlight())
}
