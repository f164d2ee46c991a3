// Package instances is the instance domain: each instance's record and state machine
// (pending, running, stopping, stopped, shutting-down, terminated, with reasons and
// events), launch (a record, the volumes, a seed, QEMU as a user of its own, placed in
// a systemd scope when there is one), stop, start, reboot and terminate, the machines'
// events, reconciliation at start-up (reattach, or record the exit), making an image
// of an instance (stop, capture, start again; or a live capture through the machine's
// snapshots), hot-plugging volumes, and the instance quotas.
//
// It depends on small interfaces it declares (Placer, Imaging) and on the daemon's
// parts below it (record, machines, vols, console, quota), never on the server.
package instances
