// Package daemon is kilnd. Run opens the metadata DB and the image store, composes the
// daemon's parts, reconciles the instances a previous kilnd left, and serves the API;
// the package holds only composition, the routes and the HTTP handlers (each decodes
// its request, asks a part, and answers), and the loop that serves until kilnd stops
// (reload on SIGHUP, status and watchdog for systemd, a bounded shutdown).
//
// The parts, each in its own package (docs/decisions.md, "The daemon's rooms"):
//
//   - daemon/api and daemon/client: the wire types and errors, and the Go client;
//     only daemon/api turns errors into codes and messages;
//   - daemon/peer: callers (SO_PEERCRED), the descriptors they pass, the limits on what
//     they hold, the socket;
//   - daemon/settings, daemon/quota, daemon/audit: the settings file, per-user quotas
//     and their reservations, the audit trail;
//   - daemon/imaging: images as callers meet them (visibility, lookups, sharing,
//     admission, images being made);
//   - daemon/keys: users' SSH key pairs (made or imported, the cloud's fingerprints);
//   - daemon/instances: the instance domain (records and state machine, lifecycle,
//     create-image, hot-plug, instance quotas), on daemon/machines (sizes, QEMU users,
//     machine specs), daemon/vols (volumes' records and files), daemon/console
//     (consoles' rings and readiness) and daemon/record (the records' buckets and the
//     layout of the data root).
//
// daemon imports builder, images, volumes, hypervisor, systemd and its parts. Nothing
// but cmd/kilnd imports daemon.
package daemon
