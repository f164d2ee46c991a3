// Package systemd is kiln's systemd integration: readiness, status, watchdog and
// stopping notification (sd_notify), socket activation, logging to the journal with
// priorities and fields, and transient scope units that put each QEMU in a cgroup of its
// own. The unit files kiln installs live beside this package (units/).
//
// Everything here works without systemd too: without NOTIFY_SOCKET nothing is sent,
// without an activated socket kilnd listens itself, without the journal logs go to
// stderr, without the system bus instances run detached.
//
// systemd imports the standard library, go-systemd and logrus; it must not import
// images, volumes, hypervisor, builder or daemon.
package systemd
