// Package peer is who is on the other end of kilnd's socket, and what they may hold of
// it: the caller's identity from the kernel (SO_PEERCRED, with the user's and groups'
// names), the descriptors a caller passes with a request (kilnd never opens a path a
// caller names: the client opens its files and passes them), the limits on the
// connections and descriptors each user may hold and on a request body's arrival, and
// the listening socket itself.
//
// peer imports daemon/settings (the limits in force). It knows nothing of images or
// instances.
package peer
