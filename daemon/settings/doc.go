// Package settings is kilnd's settings file (JSON; docs/settings.md): the log level,
// the admin and socket groups, the accelerator, per-user quotas (daemon/quota), the
// limits on what callers may hold (timeouts, connections, passed descriptors) and the
// size of each console's ring. Load reads and checks it; a malformed file changes
// nothing. kilnd reads it at start and on SIGHUP.
package settings
