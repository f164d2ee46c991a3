// Package imds is EC2's instance metadata service as kiln's guests meet it at
// http://169.254.169.254/: the metadata tree (/latest/meta-data/: instance-id, ami-id,
// public-keys/, block-device-mapping/, placement/ …), the user data, the instance
// identity document, and IMDSv2's session tokens (PUT /latest/api/token), each token
// bound to the instance that asked for it and kept in memory for its TTL. Every dated
// version EC2 lists answers as latest does.
//
// It knows an instance by who made the socket at the other end: each instance's QEMU
// runs as a uid of its own, and the host brings that QEMU's connections for the guest's
// 169.254.169.254:80 to the listener kilnd gives Serve (QEMU's user network takes the
// guest's gateway to the host's 127.0.0.1:80, and kilnd's nftables rule sends that to
// the listener: WithRedirectsFrom). The server asks the kernel who owns the socket at
// the other end (kiln/internal/netstat) and the daemon's Lookup for the instance of
// that uid; a peer no instance answers to (a host user, a stopped instance) gets 403
// and nothing else.
//
// It owns the HTTP side only: which instance a uid is, and how connections reach the
// listener (nftables), are the daemon's. It imports no other part of the daemon (the
// daemon hands it Instance values through Lookup) and of kiln only internal/netstat.
package imds
