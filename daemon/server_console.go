package daemon

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/daemon/api"
	"kiln/daemon/console"
	"kiln/daemon/peer"
)

// attachConsole answers POST /v1/instances/{instance}/console/attach, a request to
// switch protocols (Connection: Upgrade, Upgrade: kiln-console): once kilnd answers 101
// Switching Protocols, the connection carries the instance's serial console both ways
// (console.Relay) until either side closes it or the instance's QEMU exits. Refusals come
// before the switch, as any API error: the instance not running, another client
// attached, no upgrade asked for.
func (s *server) attachConsole(w http.ResponseWriter, r *http.Request, c peer.Caller) error {
	if !strings.EqualFold(r.Header.Get("Upgrade"), api.ConsoleProtocol) || !headerHas(r.Header, "Connection", "upgrade") {
		return fmt.Errorf("attach: send Connection: Upgrade and Upgrade: %s: %w", api.ConsoleProtocol, errdefs.ErrInvalidArgument)
	}
	inst, err := s.inst.Get(r.PathValue("instance"), c.User, s.viewer(c))
	if err != nil {
		return err
	}
	id := s.inst.Record(inst).ID
	guest, err := s.inst.DialConsole(r.Context(), inst)
	if err != nil {
		return err
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		guest.Close()
		return fmt.Errorf("attach: the connection cannot be taken over: %w", err)
	}
	// From here on the connection is the console's: errors are kilnd's to log.
	l := log.G(r.Context()).WithField("instance", id).WithField("uid", c.UID)
	// The answer goes under a deadline of its own (a client that does not read would hold
	// the console unread); then the session has none (BodyDeadline bounds requests).
	conn.SetDeadline(time.Now().Add(switchDeadline))
	brw.WriteString(api.ConsoleSwitch(id))
	if err := brw.Flush(); err != nil {
		guest.Close()
		conn.Close()
		return nil
	}
	conn.SetDeadline(time.Time{})
	l.Info("console attached")
	// What the client sent after its request (it may not wait for the answer) is read
	// from brw's buffer first.
	missed := console.Relay(s.opsCtx, guest, hijacked{Reader: brw.Reader, Conn: conn})
	l.WithField("missed", missed).Info("console detached")
	return nil
}

// switchDeadline bounds sending the answer that switches a connection to the console.
const switchDeadline = 10 * time.Second

// hijacked is a taken-over connection read through the buffer net/http read it with.
type hijacked struct {
	*bufio.Reader
	net.Conn
}

func (h hijacked) Read(p []byte) (int, error) { return h.Reader.Read(p) }

// headerHas reports whether the comma-separated header holds token (case aside).
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
