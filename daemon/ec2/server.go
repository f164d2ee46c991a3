package ec2

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/log"

	"kiln/daemon/api"
	"kiln/daemon/client"
	"kiln/daemon/peer"
	"kiln/daemon/record"
)

// maxBody bounds a request's body (user data is at most 256 KiB, 344 KiB as base64).
const maxBody = 1 << 20

// maxInFlight bounds the requests the door works on at once; more wait.
const maxInFlight = 32

// Config is what the door needs.
type Config struct {
	// Region is the region it answers for (api.DefaultRegion when empty).
	Region string
	// API is kiln's own API (the socket's routes): every call goes through it, as the
	// caller the request's access key belongs to.
	API http.Handler
	// Keys verify signatures; DB keeps client tokens.
	Keys *Keys
	DB   *record.DB
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// MaxInstances is how many instances a user may run (its quota).
	MaxInstances func(user string) int
}

// Server answers EC2's Query API.
type Server struct {
	cfg    Config
	kiln   *client.Client
	tokens *tokens
	slots  chan struct{}
}

// New returns the door.
func New(cfg Config) *Server {
	if cfg.Region == "" {
		cfg.Region = api.DefaultRegion
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{cfg: cfg, kiln: client.NewTransport("kilnd (in process)", inProcess{cfg.API}),
		tokens: newTokens(cfg.DB, cfg.Now), slots: make(chan struct{}, maxInFlight)}
}

// Region is the region the door answers for.
func (s *Server) Region() string { return s.cfg.Region }

// Zone is the region's one availability zone.
func (s *Server) Zone() string { return api.ZoneOf(s.cfg.Region) }

// ServeHTTP answers one request: it verifies the signature, finds the caller, parses
// the action and its parameters, and runs it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := requestID()
	start := time.Now()
	action, who, err := s.serve(w, r, id)
	l := log.G(r.Context()).WithField("op", "ec2 "+action).WithField("request", id).WithField("dur", time.Since(start))
	if who != "" {
		l = l.WithField("user", who)
	}
	if err != nil {
		if err.status() >= 500 {
			l.WithField("code", err.Code).Error(err.Message)
		} else {
			l.WithField("code", err.Code).Debug(err.Message)
		}
		writeError(w, err, id)
		return
	}
	l.Debug("request done")
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, id string) (action, who string, _ *Error) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return "", "", errorf(codeInvalidAction, "%s: the Query API takes GET and POST", clip(r.Method))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return "", "", errorf(codeInvalidParameterValue, "reading the request: %v", err)
	}
	if len(body) > maxBody {
		return "", "", errorf(codeInvalidParameterValue, "the request is over %d bytes", maxBody)
	}
	sig, e := parseSignature(r)
	if e != nil {
		return "", "", e
	}
	if e := sig.checkTime(s.cfg.Now()); e != nil {
		return "", "", e
	}
	if sig.region != s.cfg.Region {
		return "", "", errorf(codeAuthFailure, "the request is signed for region %q: this endpoint is region %s (aws --region %s)", clip(sig.region), s.cfg.Region, s.cfg.Region)
	}
	key, ok := s.cfg.Keys.lookup(sig.keyID)
	if !ok || !sig.verify(r, body, key.Secret) {
		// One answer for both, as the cloud's: a prober learns nothing of which keys exist.
		return "", "", errorf(codeAuthFailure, "AWS was not able to validate the provided access credentials: check the access key id and secret (kiln access-key ls)")
	}
	caller, err := peer.Identify(key.UID)
	if err != nil || caller.User != key.OwnerID {
		// A uid given to another user since is not the key's user: the key is nobody's.
		return "", "", errorf(codeAuthFailure, "the access key's user (%s, uid %d) no longer exists on this host", key.OwnerID, key.UID)
	}
	// A slot only now: bodies that are slow to come, or unsigned, hold none.
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-r.Context().Done():
		return "", caller.User, errorf(codeRequestLimitExceeded, "the request was given up while it waited for one of the %d slots", maxInFlight)
	}
	p, e := parseParams(r, body, sig.presigned)
	if e != nil {
		return "", caller.User, e
	}
	action = p.get("Action")
	if action == "" {
		return "", caller.User, errorf(codeMissingAction, "the request names no Action")
	}
	if v := p.get("Version"); v != APIVersion {
		return action, caller.User, errorf(codeNoSuchVersion, "Version %q: kiln speaks EC2's API version %s", clip(v), APIVersion)
	}
	a, ok := actions[action]
	if !ok {
		return action, caller.User, errorf(codeInvalidAction, "The action %s is not valid for this web service: kiln's EC2 endpoint does not implement it (docs/ec2.md lists what it does)", clip(action))
	}
	if e := p.only(a.params); e != nil {
		return action, caller.User, e
	}
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	c := &call{ctx: peer.NewContext(r.Context(), caller), caller: caller, p: p, s: s, action: action, endpoint: scheme + r.Host}
	if c.dry, e = p.boolean("DryRun"); e != nil {
		return action, caller.User, e
	}
	resp, e := a.run(c)
	if e != nil {
		return action, caller.User, e
	}
	resp.setRequestID(id)
	// A bytes.Buffer, not a strings.Builder: it grows by doubling, and a DescribeImages of
	// 1,000 images copied twice the bytes into a Builder (BenchmarkEC2DescribeImages1k).
	var b bytes.Buffer
	if err := encodeAnswer(&b, action+"Response", resp); err != nil {
		return action, caller.User, errorf(codeInternalError, "encoding the answer: %v", err)
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.Write(b.Bytes())
	return action, caller.User, nil
}

// call is one request being answered.
type call struct {
	ctx    context.Context // carries the caller, for kiln's API
	caller peer.Caller
	p      params
	s      *Server
	action string
	dry    bool
	// endpoint is the door's URL as the caller reached it.
	endpoint string
}

// dryRun is the answer to a request with DryRun once its checks passed.
func (c *call) dryRun() (answer, *Error) {
	return nil, errorf(codeDryRunOperation, "Request would have succeeded, but DryRun flag is set.")
}

// answer is a response document's body; the server adds the request's id.
type answer interface{ setRequestID(string) }

// meta is what every answer carries.
type meta struct {
	RequestID string `xml:"requestId"`
}

func (m *meta) setRequestID(id string) { m.RequestID = id }

// list is an EC2 list: its items each in an <item> element, the list present (empty)
// when there are none.
type list[T any] struct {
	Items []T `xml:"item"`
}

func listOf[T any](items []T) list[T] { return list[T]{Items: items} }

// action is one implemented action: what it takes (the names before any ".N") and
// what runs it.
type action struct {
	params []string
	run    func(*call) (answer, *Error)
}

// requestID is a new request's id, as the cloud's: a UUID.
func requestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Serve answers on ln until it is closed; srv's handler is set to s.
func (s *Server) Serve(srv *http.Server, ln net.Listener) error {
	srv.Handler = s
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenAddress is the address --ec2-listen means: a bare port (":8773" or "8773")
// listens on loopback only.
func ListenAddress(addr string) string {
	port := strings.TrimPrefix(addr, ":")
	if _, err := strconv.ParseUint(port, 10, 16); err == nil {
		return "127.0.0.1:" + port
	}
	return addr
}
