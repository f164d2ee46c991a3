// Package daemon is kilnd. Run composes the image store, the builder, the hypervisor and
// systemd, reconciles the instances a previous kilnd left, and serves the API; the
// package holds:
//
//   - the HTTP/JSON API on the Unix socket: routes and handlers for images (register,
//     inspect, tag, share, copy, create from an instance, deregister), snapshots,
//     instances (run, stop, start, reboot, terminate, console), volumes (create, attach,
//     detach, delete) and garbage collection; the listening socket itself, also when
//     systemd passes it;
//   - callers: who is on the other end of the socket (SO_PEERCRED, users and groups,
//     administrators), the descriptors a caller passes with a request (kilnd never opens
//     a path a caller names), and limits on the connections, descriptors and request
//     time each user may hold;
//   - instances: their records in the metadata DB and their state machine (pending,
//     running, stopping, stopped, shutting-down, terminated, with reasons and events),
//     launch (overlay volumes over the image's layers, a seed, QEMU as a user of its own,
//     placed in a systemd scope when there is one), stop, start, reboot and terminate,
//     the machines' events, and reconciliation at start-up (reattach, or record the exit);
//   - create-image orchestration: stop, capture and start again, or a live capture
//     through the machine's external snapshots;
//   - volumes: standalone or an instance's, blank or over a snapshot, attached to a
//     stopped instance or hot-plugged into a running one;
//   - consoles: each kept as a ring of its last part on disk, read by chunks, and the
//     guest's readiness read from it;
//   - admission: per-user quotas on images, instances, vCPUs, memory, volumes and stored
//     bytes, reserved before the work starts;
//   - the settings file (log level, groups, accelerator, quotas, limits, console size),
//     re-read on SIGHUP, and the audit trail: one JSON line per mutating request,
//     reopened on SIGHUP for log rotation;
//   - long operations (an image being registered or created) with their progress,
//     readiness, status and watchdog for systemd, and a bounded shutdown.
//
// daemon imports builder, images, volumes, hypervisor, systemd and daemon/api. Nothing
// but cmd/kilnd imports daemon.
package daemon
