package imds

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/internal/netstat"
)

// DefaultZone is the availability zone the service names when WithZone is not given.
const DefaultZone = "kiln-local-1a"

// Limits.
const (
	// MaxTokenTTL is the longest session a token may ask for, EC2's: six hours.
	MaxTokenTTL = 21600 * time.Second
	// MaxTokens is how many live tokens an instance keeps: one more replaces the one
	// nearest its end, so that a guest cannot grow kilnd's memory.
	MaxTokens = 64
	// MaxConns is how many connections an instance may have served at once; one more
	// is answered 429 and closed.
	MaxConns = 16

	maxHeaderBytes    = 8 << 10
	readHeaderTimeout = 5 * time.Second
	readWriteTimeout  = 10 * time.Second
	idleTimeout       = time.Minute
)

// The headers of IMDSv2.
const (
	headerToken    = "X-Aws-Ec2-Metadata-Token"
	headerTokenTTL = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
)

// Instance is what the service answers an instance with. The daemon makes it; the
// service keeps none between requests.
type Instance struct {
	ID            string    // i-…: instance-id
	ImageID       string    // ami-…: ami-id
	InstanceType  string    // instance-type
	Architecture  string    // the identity document's; x86_64 when empty
	AccountID     string    // the identity document's accountId (the owner), left out when empty
	ReservationID string    // r-…: reservation-id, listed when not empty
	LaunchTime    time.Time // the identity document's pendingTime
	LocalIPv4     string    // local-ipv4, the identity document's privateIp
	Hostname      string    // hostname and local-hostname
	MAC           string    // mac: the address of the instance's network card

	// PublicKeys are the instance's key pairs' public keys by name, in OpenSSH's
	// authorized_keys form: public-keys/ lists them by index in the names' order
	// (0=NAME), public-keys/0/openssh-key is the first.
	PublicKeys map[string]string
	// BlockDeviceMappings are EC2's block-device-mapping/: "ami" and "root" (the root
	// device), "ebs1", "ebs2" … (volumes), each to its device name.
	BlockDeviceMappings map[string]string
	// UserData is user-data, as given at launch; none answers 404.
	UserData []byte

	TokensRequired bool // IMDSv2 only (EC2's HttpTokens=required): a request without a token gets 401
	Enabled        bool // false: every request gets 403 (EC2's HttpEndpoint=disabled)
}

// Lookup is the instance whose QEMU runs as uid, if one does now. The service calls it
// for each request, concurrently.
type Lookup func(uid uint32) (Instance, bool)

// Option sets up a Server.
type Option func(*Server)

// WithZone is the availability zone the instances are in (placement/availability-zone),
// one line, EC2's form: a region (placement/region) and a letter.
func WithZone(zone string) Option {
	return func(s *Server) { s.zone = zone }
}

// WithRedirectsFrom are the addresses the host's DNAT rule sends to the listener: with
// kilnd's firewall, 127.0.0.1:80, where QEMU's user network takes the guest's gateway
// (169.254.169.254). A QEMU's socket brought here that way still has one of them as its
// remote address, not the listener's; without them the server knows only the clients
// that connected to the listener itself, and refuses the others.
func WithRedirectsFrom(addrs ...netip.AddrPort) Option {
	return func(s *Server) { s.redirects = append(s.redirects, addrs...) }
}

// WithClock is the clock tokens are made and expire by (time.Now by default).
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// Server is the metadata service. Its methods are safe for concurrent use.
type Server struct {
	lookup    Lookup
	redirects []netip.AddrPort
	zone      string
	now       func() time.Time
	http      *http.Server
	tokens    tokens

	mu    sync.Mutex
	peers map[net.Conn]*peer // the open connections
	conns map[uint32]int     // the connections served, by uid
}

// NewServer makes a server that answers each peer as lookup says.
func NewServer(lookup Lookup, opts ...Option) *Server {
	s := &Server{
		lookup: lookup,
		zone:   DefaultZone,
		now:    time.Now,
		tokens: tokens{byUID: map[uint32][]token{}},
		peers:  map[net.Conn]*peer{},
		conns:  map[uint32]int{},
	}
	for _, o := range opts {
		o(s)
	}
	if s.zone == "" {
		s.zone = DefaultZone
	}
	s.http = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readWriteTimeout,
		WriteTimeout:      readWriteTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnContext:       s.connContext,
		ConnState:         s.connState,
		ErrorLog:          stdlog.New(warnWriter{}, "imds: ", 0),
	}
	return s
}

// Serve answers the connections ln accepts (a TCP listener: kilnd's on 127.0.0.1) until
// Close; it returns nil then, or the error that ended it. It may serve several
// listeners at once; Close closes them.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close closes the listeners and every connection at once. The tokens die with the
// server.
func (s *Server) Close() error {
	return s.http.Close()
}

// serveHTTP answers one request: the peer first (403 when no instance answers to it),
// then the method and IMDSv2's rules, then the path.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p, _ := ctx.Value(peerKey{}).(*peer)
	uid, ok := s.resolve(ctx, p)
	var inst Instance
	if ok {
		inst, ok = s.lookup(uid)
	}
	if !ok || !inst.Enabled {
		l := log.G(ctx).WithField("peer", r.RemoteAddr)
		if p != nil && p.err == nil {
			l = l.WithField("uid", uid)
		} else if p != nil {
			l = l.WithError(p.err)
		}
		l.Debug("imds: refused a peer no instance answers to")
		fail(w, http.StatusForbidden)
		return
	}
	if p.over {
		w.Header().Set("Connection", "close")
		fail(w, http.StatusTooManyRequests)
		return
	}

	segs, ok := split(r.URL.Path)
	if len(segs) == 3 && segs[1] == "api" && segs[2] == "token" && isVersion(segs[0]) {
		switch {
		case r.Method != http.MethodPut:
			w.Header().Set("Allow", http.MethodPut)
			fail(w, http.StatusMethodNotAllowed)
		case segs[0] != "latest": // EC2 refuses a token asked of a dated version
			fail(w, http.StatusForbidden)
		default:
			s.putToken(w, r, uid, inst)
		}
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		fail(w, http.StatusMethodNotAllowed)
		return
	}
	if values, has := r.Header[headerToken]; has {
		if len(values) != 1 || !s.tokens.valid(uid, inst.ID, values[0], s.now()) {
			fail(w, http.StatusUnauthorized)
			return
		}
	} else if inst.TokensRequired {
		fail(w, http.StatusUnauthorized)
		return
	}
	var n *node
	if ok {
		n, ok = find(s.root(inst), segs)
	}
	if !ok {
		fail(w, http.StatusNotFound)
		return
	}
	body, ctype := n.answer()
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body) // an error means the peer has gone; nothing to do
}

// putToken answers PUT /latest/api/token: a new token for the TTL the header asks,
// bound to this uid and instance.
func (s *Server) putToken(w http.ResponseWriter, r *http.Request, uid uint32, inst Instance) {
	if _, forwarded := r.Header["X-Forwarded-For"]; forwarded {
		fail(w, http.StatusForbidden) // EC2's: a proxy's request does not open a session
		return
	}
	ttl, ok := parseTTL(r.Header.Values(headerTokenTTL))
	if !ok {
		fail(w, http.StatusBadRequest)
		return
	}
	tok := s.tokens.mint(uid, inst.ID, s.now(), ttl)
	w.Header().Set(headerTokenTTL, strconv.Itoa(int(ttl/time.Second)))
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(tok)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(tok)) // an error means the peer has gone; nothing to do
}

// parseTTL reads the one value of the TTL header: whole seconds, 1 to MaxTokenTTL,
// digits only.
func parseTTL(values []string) (time.Duration, bool) {
	if len(values) != 1 || values[0] == "" || len(values[0]) > 10 || strings.Trim(values[0], "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(values[0], 10, 64)
	if err != nil || n < 1 || time.Duration(n)*time.Second > MaxTokenTTL {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// fail answers an error as EC2 does: its status and a small XHTML page naming it.
func fail(w http.ResponseWriter, code int) {
	title := strconv.Itoa(code) + " - " + http.StatusText(code)
	body := `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>` + title + `</title>
 </head>
 <body>
  <h1>` + title + `</h1>
 </body>
</html>
`
	w.Header().Set("Content-Type", "text/html")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body)) // an error means the peer has gone; nothing to do
}

// peer is what the server knows of a connection's other end: found once, at its first
// request, since who made a socket does not change.
type peer struct {
	conn    net.Conn
	once    sync.Once
	uid     uint32
	err     error // no owner found
	counted bool  // in Server.conns (guarded by Server.mu)
	over    bool  // its uid had MaxConns already
}

type peerKey struct{}

func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	p := &peer{conn: c}
	s.mu.Lock()
	s.peers[c] = p
	s.mu.Unlock()
	return context.WithValue(ctx, peerKey{}, p)
}

func (s *Server) connState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.peers[c]
	if !ok {
		return
	}
	delete(s.peers, c)
	if p.counted {
		if s.conns[p.uid]--; s.conns[p.uid] <= 0 {
			delete(s.conns, p.uid)
		}
	}
}

// resolve finds the uid of p's socket, once, and counts p among its uid's connections.
func (s *Server) resolve(ctx context.Context, p *peer) (uint32, bool) {
	if p == nil {
		return 0, false
	}
	p.once.Do(func() {
		p.uid, p.err = peerUID(p.conn, s.redirects)
		if p.err != nil {
			l := log.G(ctx).WithError(p.err).WithField("peer", p.conn.RemoteAddr().String())
			switch {
			case errdefs.IsNotFound(p.err): // said when the request is refused
			case errdefs.IsConflict(p.err):
				l.Warn("imds: two owners for a peer's socket (a NAT clash?): refused")
			default:
				l.Error("imds: the kernel did not say who owns a peer's socket")
			}
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, open := s.peers[p.conn]; !open {
			return
		}
		if s.conns[p.uid] >= MaxConns {
			p.over = true
			return
		}
		s.conns[p.uid]++
		p.counted = true
	})
	return p.uid, p.err == nil
}

// peerUID is the uid that made the socket at the other end of c, a TCP connection this
// host made to the listener: the socket whose local address is c's remote one and whose
// remote address is the listener's (a client that connected to it) or one of redirects
// (a QEMU's connection the host's DNAT rule brought here). Errors are netstat.Owner's.
func peerUID(c net.Conn, redirects []netip.AddrPort) (uint32, error) {
	local, lok := c.LocalAddr().(*net.TCPAddr)
	remote, rok := c.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return 0, fmt.Errorf("peer %s: not TCP: %w", c.RemoteAddr(), errdefs.ErrNotFound)
	}
	return netstat.Owner(remote.AddrPort(), append([]netip.AddrPort{local.AddrPort()}, redirects...)...)
}

// warnWriter takes net/http's own complaints (an accept error it retries, a handler's
// panic) to the log.
type warnWriter struct{}

func (warnWriter) Write(b []byte) (int, error) {
	log.L.Warn(strings.TrimSpace(string(b)))
	return len(b), nil
}
