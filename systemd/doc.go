// Package systemd is kiln's systemd integration: readiness, status, reload, watchdog and
// stopping notification (sd_notify), socket activation (the API socket passed by
// kilnd.socket), logging to the journal with priorities and fields (a logrus hook over
// go-systemd's journal), and transient scope units, kiln-<id>.scope in kiln.slice, that
// put each QEMU in a cgroup of its own with memory and CPU bounds. The unit files kiln
// installs live beside this package (units/).
//
// Everything here works without systemd too: without NOTIFY_SOCKET nothing is sent,
// without an activated socket kilnd listens itself, without the journal logs go to
// stderr, without the system bus instances run detached.
//
// systemd imports the standard library, go-systemd, godbus, logrus and golang.org/x/sys;
// it must not import images, volumes, hypervisor, builder or daemon.
package systemd
