// Package api holds the wire types of kilnd's HTTP/JSON API on its Unix socket, shared
// by the server (package daemon) and the client (package daemon/client), and the one
// mapping between error classes and the cloud-style error codes and HTTP statuses.
//
// api has no logic beyond that mapping. It imports the standard library and
// github.com/containerd/errdefs (a module without dependencies, so that errors keep
// their class across the socket); it must not import anything else of kiln.
package api
