// Command kilnd is kiln's daemon: it keeps the machine-image store and serves the API
// on a Unix socket. See 'kilnd --help' for its flags.
//
// It parses its flags and calls daemon.Run. Under systemd it takes the socket
// kilnd.socket passes and logs to the journal when its stderr is the journal's. SIGHUP
// re-reads the settings file and reopens the audit trail (log rotation); SIGINT and
// SIGTERM stop it, leaving the instances' QEMUs running for the next kilnd to reattach.
package main
