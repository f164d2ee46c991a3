// Package qmp is kiln's client of the QEMU Machine Protocol on a Unix socket. Client
// implements go-qemu's qmp.Monitor, so go-qemu's typed qmp/raw commands run over it,
// without the faults of go-qemu's own SocketMonitor: replies of any size up to a set
// limit, a deadline on every wait, command ids, and events fanned out to every
// subscriber without ever blocking the reader.
//
// qmp imports the standard library and go-qemu's qmp package only.
package qmp
