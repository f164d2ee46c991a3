// Package client is the Go client of kilnd's API on its Unix socket. The CLI and the
// tests use it. A request that names the caller's files (register's disks, kernel and
// initrd) opens them with the caller's own rights, refusing anything but a regular file,
// and passes the open descriptors with the request (SCM_RIGHTS): kilnd never opens a
// caller's path. Waits (WaitImage, WaitInstance) ask again until the state is reached,
// one that cannot lead there is, or ctx ends.
// Errors from the daemon come back as *api.Error, which unwraps to its errdefs class
// (errdefs.IsNotFound(err) works); a daemon not reached at all gives
// ErrDaemonUnreachable.
//
// client imports the standard library and daemon/api only.
package client
