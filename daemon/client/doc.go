// Package client is the Go client of kilnd's API on its Unix socket. The CLI and the
// tests use it. Errors from the daemon come back as *api.Error, which unwraps to its
// errdefs class (errdefs.IsNotFound(err) works).
//
// client imports the standard library and daemon/api only.
package client
