// Package daemon is kilnd: the HTTP/JSON API on the Unix socket, caller identity,
// long operations (an image being registered), start-up reconciliation and shutdown.
//
// daemon imports builder, images, volumes, hypervisor, systemd and daemon/api. Nothing
// below it imports daemon.
package daemon
