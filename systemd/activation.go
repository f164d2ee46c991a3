package systemd

import (
	"fmt"
	"net"

	"github.com/coreos/go-systemd/v22/activation"
)

// SocketName is the FileDescriptorName of kilnd's API socket in kilnd.socket.
const SocketName = "kiln.sock"

// Listener returns the socket systemd passed under name, or nil when there is none
// (kilnd then listens itself).
func Listener(name string) (net.Listener, error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	ls := named[name]
	if len(ls) == 0 {
		return nil, nil
	}
	if len(ls) > 1 {
		return nil, fmt.Errorf("socket activation: %d sockets named %s; want one", len(ls), name)
	}
	return ls[0], nil
}
