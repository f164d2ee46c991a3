// Package netstat reads the kernel's sockets: its tables (/proc/net/tcp, tcp6, udp,
// udp6), each socket's local and remote address, state, owner (a uid) and inode; and
// the owner of one TCP connection's socket, asked of the kernel alone (sock_diag, as ss
// does), since reading the tables walks the kernel's whole hash of connections.
//
// It is neutral ground, as internal/ids is: daemon/machines names the process holding
// a port with it, daemon/imds the uid (an instance's QEMU) at the other end of a
// connection it accepted; neither room may import the other. It imports nothing of
// kiln and, beside the standard library, only errdefs.
package netstat
