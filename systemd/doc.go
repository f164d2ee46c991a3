// Package systemd will own kiln's systemd integration: unit files, readiness and
// watchdog notification, socket activation, journald logging and transient units.
//
// systemd imports the standard library and go-systemd; it must not import images,
// volumes, hypervisor, builder or daemon.
package systemd
