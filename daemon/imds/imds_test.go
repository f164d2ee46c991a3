package imds

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kiln/internal/kilntest"
)

// The tests' instances' "QEMU users": uids of no account, past kiln's QEMU range, whose
// connections to loopback kilnd's firewall refuses (daemon/machines: its nftables table
// stays when a kilnd has run on the machine).
const (
	uidA    = 2_100_000_005 // instance A: everything set, IMDSv1 allowed
	uidB    = 2_100_000_006 // instance B: IMDSv2 only, no user data, no keys
	uidC    = 2_100_000_007 // instance C: metadata turned off
	uidNone = 2_100_000_008 // no instance
)

var (
	instA = Instance{
		ID:            "i-0aaaaaaaaaaaaaaa1",
		ImageID:       "ami-0aaaaaaaaaaaaaaa2",
		InstanceType:  "t3.micro",
		AccountID:     "alice",
		ReservationID: "r-0aaaaaaaaaaaaaaa3",
		LaunchTime:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600)),
		LocalIPv4:     "10.0.2.15",
		Hostname:      "web",
		MAC:           "52:54:00:0a:0a:0a",
		PublicKeys: map[string]string{
			"laptop": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIlaptop laptop",
			"ci":     "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIci ci",
			"bad\n":  "ssh-ed25519 AAAA a name of two lines, left out",
		},
		BlockDeviceMappings: map[string]string{"ami": "vda", "root": "/dev/vda", "ebs1": "vdb", "../x": "left out"},
		UserData:            []byte("#cloud-config\n\x00binary\xff"),
		Enabled:             true,
	}
	instB = Instance{ID: "i-0bbbbbbbbbbbbbbb1", ImageID: "ami-0bbbbbbbbbbbbbbb2", InstanceType: "t3.small", TokensRequired: true, Enabled: true}
	instC = Instance{ID: "i-0ccccccccccccccc1", ImageID: "ami-0ccccccccccccccc2", InstanceType: "t3.small"}
)

// world is a server on loopback, answering the instances it is given, on a clock the
// test moves.
type world struct {
	t     *testing.T
	srv   *Server
	addr  netip.AddrPort
	clock *clock

	mu        sync.Mutex
	instances map[uint32]Instance
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// start serves instances A, B and C until the test ends.
func start(t *testing.T, opts ...Option) *world {
	t.Helper()
	if os.Geteuid() != 0 {
		kilntest.Missing(t, "the imds tests connect from sockets of QEMU users' uids: run them as root")
	}
	w := &world{
		t:         t,
		clock:     &clock{now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)},
		instances: map[uint32]Instance{uidA: instA, uidB: instB, uidC: instC},
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	w.srv = NewServer(w.lookup, append([]Option{WithClock(w.clock.Now)}, opts...)...)
	served := make(chan error, 1)
	go func() { served <- w.srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := w.srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve after Close: %v; want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve had not returned 10s after Close")
		}
	})
	return w
}

func (w *world) lookup(uid uint32) (Instance, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	inst, ok := w.instances[uid]
	return inst, ok
}

func (w *world) set(uid uint32, inst Instance) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.instances[uid] = inst
}

func (w *world) remove(uid uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.instances, uid)
}

// dialAs connects to addr from a socket made as uid: made on a thread of this process
// whose file system uid is uid for that moment (the kernel gives a socket the fsuid of
// its maker, as it does to a QEMU's).
func dialAs(uid uint32, addr netip.AddrPort) (net.Conn, error) {
	type made struct {
		fd  int
		err error
	}
	ch := make(chan made, 1)
	go func() {
		runtime.LockOSThread()
		prev, _ := unix.SetfsuidRetUid(int(uid))
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		_, _ = unix.SetfsuidRetUid(prev)
		if now, _ := unix.SetfsuidRetUid(-1); now == prev { // -1 asks without changing
			runtime.UnlockOSThread()
		} // else the thread ends with this goroutine, never to run another as uid
		ch <- made{fd, err}
	}()
	m := <-ch
	if m.err != nil {
		return nil, m.err
	}
	if err := unix.Connect(m.fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
		unix.Close(m.fd)
		return nil, err
	}
	f := os.NewFile(uintptr(m.fd), "imds client")
	defer f.Close()
	return net.FileConn(f)
}

// client is an HTTP client whose connections are uid's, kept for the next request
// when keep is set.
func (w *world) client(uid uint32, keep bool) *http.Client {
	tr := &http.Transport{
		DialContext:       func(context.Context, string, string) (net.Conn, error) { return dialAs(uid, w.addr) },
		DisableKeepAlives: !keep,
	}
	w.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type reply struct {
	code   int
	body   string
	header http.Header
}

// do sends method path as uid with headers (name, value, name, value …).
func (w *world) do(uid uint32, method, path string, headers ...string) reply {
	w.t.Helper()
	return w.with(w.client(uid, false), method, path, headers...)
}

func (w *world) with(c *http.Client, method, path string, headers ...string) reply {
	w.t.Helper()
	req, err := http.NewRequest(method, "http://"+w.addr.String()+path, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	return reply{resp.StatusCode, string(b), resp.Header}
}

// token asks uid's instance for a token of ttl seconds.
func (w *world) token(uid uint32, ttl int) string {
	w.t.Helper()
	r := w.do(uid, http.MethodPut, "/latest/api/token", headerTokenTTL, strconv.Itoa(ttl))
	if r.code != http.StatusOK || r.body == "" || r.header.Get(headerTokenTTL) != strconv.Itoa(ttl) {
		w.t.Fatalf("PUT /latest/api/token (ttl %d) as %d: %d %q, ttl header %q", ttl, uid, r.code, r.body, r.header.Get(headerTokenTTL))
	}
	return r.body
}

// want checks a reply's status, and its body unless wantBody is "-".
func want(t *testing.T, what string, r reply, code int, wantBody string) {
	t.Helper()
	if r.code != code || (wantBody != "-" && r.body != wantBody) {
		t.Errorf("%s: %d %q; want %d %q", what, r.code, r.body, code, wantBody)
	}
	wantType := "text/plain"
	if code != http.StatusOK {
		wantType = "text/html"
		if title := fmt.Sprintf("<title>%d - %s</title>", code, http.StatusText(code)); !strings.Contains(r.body, title) {
			t.Errorf("%s: body %q does not name %s as EC2's does", what, r.body, title)
		}
	}
	if got := r.header.Get("Content-Type"); got != wantType && !(what == "/latest/user-data" && got == "application/octet-stream") {
		t.Errorf("%s: Content-Type %q; want %q", what, got, wantType)
	}
}

// TestMetadata: every path of the tree answers instance A's values (IMDSv1, no
// token), directories list their entries one a line (a directory's with a /), and a
// path not in the tree gets EC2's 404.
func TestMetadata(t *testing.T) {
	w := start(t)
	meta := strings.Join([]string{"ami-id", "block-device-mapping/", "hostname", "instance-id", "instance-type",
		"local-hostname", "local-ipv4", "mac", "placement/", "public-keys/", "reservation-id"}, "\n")
	for _, tc := range []struct{ path, body string }{
		{"/", strings.Join(versions, "\n")},
		{"/latest", "dynamic\nmeta-data\nuser-data"},
		{"/latest/", "dynamic\nmeta-data\nuser-data"},
		{"/latest/meta-data/", meta},
		{"/latest/meta-data", meta},
		{"/2009-04-04/meta-data/", meta},
		{"/latest/meta-data/instance-id", instA.ID},
		{"/latest/meta-data/instance-id/", instA.ID},
		{"/2021-03-23/meta-data/instance-id", instA.ID},
		{"/latest/meta-data/ami-id", instA.ImageID},
		{"/latest/meta-data/instance-type", instA.InstanceType},
		{"/latest/meta-data/local-ipv4", instA.LocalIPv4},
		{"/latest/meta-data/local-hostname", instA.Hostname},
		{"/latest/meta-data/hostname", instA.Hostname},
		{"/latest/meta-data/mac", instA.MAC},
		{"/latest/meta-data/reservation-id", instA.ReservationID},
		{"/latest/meta-data/placement/", "availability-zone\nregion"},
		{"/latest/meta-data/placement/availability-zone", "kiln-local-1a"},
		{"/latest/meta-data/placement/region", "kiln-local-1"},
		{"/latest/meta-data/public-keys/", "0=ci\n1=laptop"},
		{"/latest/meta-data/public-keys/0/", "openssh-key"},
		{"/latest/meta-data/public-keys/0/openssh-key", instA.PublicKeys["ci"]},
		{"/latest/meta-data/public-keys/1/openssh-key", instA.PublicKeys["laptop"]},
		{"/latest/meta-data/block-device-mapping/", "ami\nebs1\nroot"},
		{"/latest/meta-data/block-device-mapping/ami", "vda"},
		{"/latest/meta-data/block-device-mapping/root", "/dev/vda"},
		{"/latest/meta-data/block-device-mapping/ebs1", "vdb"},
		{"/latest/user-data", string(instA.UserData)},
		{"/latest/dynamic/", "instance-identity/"},
		{"/latest/dynamic/instance-identity/", "document"},
	} {
		want(t, tc.path, w.do(uidA, http.MethodGet, tc.path), http.StatusOK, tc.body)
	}
	if got := w.do(uidA, http.MethodGet, "/latest/user-data").header.Get("Content-Type"); got != "application/octet-stream" {
		t.Errorf("user data's Content-Type: %q; want application/octet-stream", got)
	}

	r := w.do(uidA, http.MethodGet, "/latest/dynamic/instance-identity/document")
	want(t, "the identity document", r, http.StatusOK, "-")
	var doc map[string]any
	if err := json.Unmarshal([]byte(r.body), &doc); err != nil {
		t.Fatalf("the identity document: %v: %s", err, r.body)
	}
	wantDoc := map[string]any{
		"accountId": "alice", "architecture": "x86_64", "availabilityZone": "kiln-local-1a",
		"imageId": instA.ImageID, "instanceId": instA.ID, "instanceType": "t3.micro",
		"pendingTime": "2026-01-02T02:04:05Z", "privateIp": "10.0.2.15", "region": "kiln-local-1",
		"version": "2017-09-30",
	}
	if fmt.Sprint(doc) != fmt.Sprint(wantDoc) {
		t.Errorf("the identity document: %v; want %v", doc, wantDoc)
	}

	r = w.do(uidA, http.MethodHead, "/latest/meta-data/instance-id")
	if r.code != http.StatusOK || r.body != "" || r.header.Get("Content-Length") != strconv.Itoa(len(instA.ID)) {
		t.Errorf("HEAD instance-id: %d %q, Content-Length %q; want 200, no body, %d", r.code, r.body, r.header.Get("Content-Length"), len(instA.ID))
	}

	for _, path := range []string{
		"/latest/meta-data/nope",
		"/latest/meta-data/instance-id/more",
		"/latest/meta-data/../user-data",
		"/latest/meta-data/./instance-id",
		"/latest//meta-data/",
		"/latest/meta-data//",
		"/2099-01-01/meta-data/",
		"/meta-data/",
		"/latest/api",
		"/latest/meta-data/public-keys/2/",
		"/latest/meta-data/public-keys/0=ci/",
		"/latest/meta-data/public-keys/0/ssh-key",
		"/latest/meta-data/block-device-mapping/..",
		"/latest/meta-data/iam/security-credentials/",
		"/latest/dynamic/instance-identity/signature",
	} {
		want(t, path, w.do(uidA, http.MethodGet, path), http.StatusNotFound, "-")
	}

	// Instance B has no user data: /latest/ does not list it and it is not there. Nor
	// are its categories without values.
	tok := w.token(uidB, 60)
	want(t, "B's /latest/", w.do(uidB, http.MethodGet, "/latest/", headerToken, tok), http.StatusOK, "dynamic\nmeta-data")
	want(t, "B's user data", w.do(uidB, http.MethodGet, "/latest/user-data", headerToken, tok), http.StatusNotFound, "-")
	want(t, "B's meta-data", w.do(uidB, http.MethodGet, "/latest/meta-data/", headerToken, tok), http.StatusOK, "ami-id\ninstance-id\ninstance-type\nplacement/")
	want(t, "B's keys", w.do(uidB, http.MethodGet, "/latest/meta-data/public-keys/", headerToken, tok), http.StatusNotFound, "-")
}

// TestZone: the zone given names the placement, and the region is the zone less its
// letter, in the metadata and the identity document.
func TestZone(t *testing.T) {
	w := start(t, WithZone("eu-west-3c"))
	want(t, "availability-zone", w.do(uidA, http.MethodGet, "/latest/meta-data/placement/availability-zone"), http.StatusOK, "eu-west-3c")
	want(t, "region", w.do(uidA, http.MethodGet, "/latest/meta-data/placement/region"), http.StatusOK, "eu-west-3")
	r := w.do(uidA, http.MethodGet, "/latest/dynamic/instance-identity/document")
	if !strings.Contains(r.body, `"availabilityZone": "eu-west-3c"`) || !strings.Contains(r.body, `"region": "eu-west-3"`) {
		t.Errorf("the identity document in eu-west-3c: %s", r.body)
	}
	for zone, region := range map[string]string{"kiln-local-1a": "kiln-local-1", "kiln": "kiln", "zone-b": "zone-b", "1a": "1"} {
		if got := regionOf(zone); got != region {
			t.Errorf("regionOf(%q): %q; want %q", zone, got, region)
		}
	}
}

// TestTokens: PUT /latest/api/token answers a token for the TTL asked (1 to 21600
// seconds, said back in a header), which opens the metadata until the TTL has passed;
// a token that is not one, an empty one, a bad TTL, a proxy's request, a dated
// version's token path and the wrong methods are refused as EC2 refuses them.
func TestTokens(t *testing.T) {
	w := start(t)
	tok := w.token(uidA, 60)
	const path = "/latest/meta-data/instance-id"
	want(t, "with the token", w.do(uidA, http.MethodGet, path, headerToken, tok), http.StatusOK, instA.ID)
	w.clock.Advance(59 * time.Second)
	want(t, "with the token at 59s of 60", w.do(uidA, http.MethodGet, path, headerToken, tok), http.StatusOK, instA.ID)
	w.clock.Advance(time.Second)
	want(t, "with the token at 60s of 60", w.do(uidA, http.MethodGet, path, headerToken, tok), http.StatusUnauthorized, "-")
	want(t, "without a token (IMDSv1)", w.do(uidA, http.MethodGet, path), http.StatusOK, instA.ID)
	want(t, "with a made-up token", w.do(uidA, http.MethodGet, path, headerToken, "AQAEAK0f"), http.StatusUnauthorized, "-")
	want(t, "with an empty token", w.do(uidA, http.MethodGet, path, headerToken, ""), http.StatusUnauthorized, "-")
	fresh := w.token(uidA, 60)
	want(t, "with a token twice", w.do(uidA, http.MethodGet, path, headerToken, fresh, headerToken, fresh), http.StatusUnauthorized, "-")

	for _, ttl := range [][]string{{}, {""}, {"0"}, {"21601"}, {"-1"}, {"+5"}, {"5s"}, {"abc"}, {"99999999999999999999"}, {"5", "6"}} {
		var h []string
		for _, v := range ttl {
			h = append(h, headerTokenTTL, v)
		}
		want(t, fmt.Sprintf("PUT with TTL %q", ttl), w.do(uidA, http.MethodPut, "/latest/api/token", h...), http.StatusBadRequest, "-")
	}
	w.token(uidA, 1)
	w.token(uidA, 21600)
	want(t, "PUT through a proxy", w.do(uidA, http.MethodPut, "/latest/api/token", headerTokenTTL, "60", "X-Forwarded-For", "203.0.113.9"), http.StatusForbidden, "-")
	want(t, "PUT to a dated version", w.do(uidA, http.MethodPut, "/2021-03-23/api/token", headerTokenTTL, "60"), http.StatusForbidden, "-")

	for _, tc := range []struct{ method, path, allow string }{
		{http.MethodGet, "/latest/api/token", "PUT"},
		{http.MethodPost, "/latest/api/token", "PUT"},
		{http.MethodPost, "/latest/meta-data/", "GET, HEAD"},
		{http.MethodPut, "/latest/meta-data/instance-id", "GET, HEAD"},
		{http.MethodDelete, "/", "GET, HEAD"},
		{http.MethodOptions, "/latest/user-data", "GET, HEAD"},
	} {
		r := w.do(uidA, tc.method, tc.path, headerTokenTTL, "60")
		want(t, tc.method+" "+tc.path, r, http.StatusMethodNotAllowed, "-")
		if got := r.header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q; want %q", tc.method, tc.path, got, tc.allow)
		}
	}
}

// TestTokenBoundToInstance: a token is its instance's: another instance presenting it
// is refused, though that one allows IMDSv1, and so is the next instance given the
// same QEMU user.
func TestTokenBoundToInstance(t *testing.T) {
	w := start(t)
	openB := instB
	openB.TokensRequired = false
	w.set(uidB, openB)
	tokA, tokB := w.token(uidA, 600), w.token(uidB, 600)
	const path = "/latest/meta-data/instance-id"
	want(t, "B with its own token", w.do(uidB, http.MethodGet, path, headerToken, tokB), http.StatusOK, instB.ID)
	want(t, "B with A's token", w.do(uidB, http.MethodGet, path, headerToken, tokA), http.StatusUnauthorized, "-")
	want(t, "A with B's token", w.do(uidA, http.MethodGet, path, headerToken, tokB), http.StatusUnauthorized, "-")
	want(t, "A with its own token", w.do(uidA, http.MethodGet, path, headerToken, tokA), http.StatusOK, instA.ID)

	next := instA
	next.ID = "i-0aaaaaaaaaaaaaaa9"
	w.set(uidA, next)
	want(t, "A's QEMU user's next instance with A's token", w.do(uidA, http.MethodGet, path, headerToken, tokA), http.StatusUnauthorized, "-")
	want(t, "A's QEMU user's next instance", w.do(uidA, http.MethodGet, path), http.StatusOK, next.ID)
}

// TestTokensRequired: an instance that requires IMDSv2 refuses a request without a
// token (401), answers one with its token, and needs none to ask for one.
func TestTokensRequired(t *testing.T) {
	w := start(t)
	const path = "/latest/meta-data/instance-id"
	want(t, "B without a token", w.do(uidB, http.MethodGet, path), http.StatusUnauthorized, "-")
	want(t, "B's listing without a token", w.do(uidB, http.MethodGet, "/"), http.StatusUnauthorized, "-")
	want(t, "B's unknown path without a token", w.do(uidB, http.MethodGet, "/nope"), http.StatusUnauthorized, "-")
	tok := w.token(uidB, 60)
	want(t, "B with its token", w.do(uidB, http.MethodGet, path, headerToken, tok), http.StatusOK, instB.ID)
	w.clock.Advance(time.Minute)
	want(t, "B with its expired token", w.do(uidB, http.MethodGet, path, headerToken, tok), http.StatusUnauthorized, "-")
	want(t, "A, on the same server, without a token", w.do(uidA, http.MethodGet, path), http.StatusOK, instA.ID)
}

// TestRefused: a peer no instance answers to (a uid of no instance, root, a stopped
// instance, one whose metadata is turned off) gets 403 for anything, a token first.
func TestRefused(t *testing.T) {
	w := start(t)
	for _, uid := range []uint32{uidNone, 0, uidC} {
		for _, tc := range []struct{ method, path string }{
			{http.MethodGet, "/latest/meta-data/instance-id"},
			{http.MethodGet, "/"},
			{http.MethodGet, "/nope"},
			{http.MethodPut, "/latest/api/token"},
			{http.MethodPost, "/"},
		} {
			want(t, fmt.Sprintf("%s %s as %d", tc.method, tc.path, uid), w.do(uid, tc.method, tc.path, headerTokenTTL, "60"), http.StatusForbidden, "-")
		}
	}
	// A stops: its next request, on the connection it keeps, is refused.
	c := w.client(uidA, true)
	want(t, "A running", w.with(c, http.MethodGet, "/latest/meta-data/instance-id"), http.StatusOK, instA.ID)
	w.remove(uidA)
	reused := false
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.addr.String()+"/latest/meta-data/instance-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !reused {
		t.Errorf("A stopped, on the connection it kept: %d (connection reused: %v); want 403 on the same connection", resp.StatusCode, reused)
	}
}

// TestTokensBounded: an instance keeps MaxTokens tokens; one more replaces its oldest;
// minting a token also drops the expired tokens of every instance once a minute.
func TestTokensBounded(t *testing.T) {
	w := start(t)
	var toks []string
	for i := 0; i <= MaxTokens; i++ {
		toks = append(toks, w.token(uidA, 3600))
	}
	if n := w.srv.tokens.count(uidA); n != MaxTokens {
		t.Errorf("A keeps %d tokens after %d; want %d", n, MaxTokens+1, MaxTokens)
	}
	const path = "/latest/meta-data/instance-id"
	want(t, "A's first token, replaced", w.do(uidA, http.MethodGet, path, headerToken, toks[0]), http.StatusUnauthorized, "-")
	want(t, "A's second token", w.do(uidA, http.MethodGet, path, headerToken, toks[1]), http.StatusOK, instA.ID)
	want(t, "A's last token", w.do(uidA, http.MethodGet, path, headerToken, toks[MaxTokens]), http.StatusOK, instA.ID)

	w.token(uidB, 60)
	w.clock.Advance(2 * time.Minute)
	w.token(uidA, 60)
	if n := w.srv.tokens.count(uidB); n != 0 {
		t.Errorf("B keeps %d expired tokens after a sweep; want 0", n)
	}
}

// TestConnsPerInstance: an instance has MaxConns connections served at once; the next
// is answered 429 and closed, and a connection let go makes room. Another instance is
// not held up.
func TestConnsPerInstance(t *testing.T) {
	w := start(t)
	get := func(c net.Conn) (*http.Response, error) {
		resp, _, err := getInstanceID(c)
		return resp, err
	}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < MaxConns; i++ {
		c, err := dialAs(uidA, w.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if resp, err := get(c); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("connection %d of A: %v, %v", i+1, resp, err)
		}
	}
	over, err := dialAs(uidA, w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if resp, err := get(over); err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("connection %d of A: %v, %v; want 429", MaxConns+1, resp, err)
	}
	over.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := over.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("connection %d of A after its 429: read %d, %v; want it closed", MaxConns+1, n, err)
	}
	want(t, "B meanwhile", w.do(uidB, http.MethodGet, "/latest/meta-data/instance-id", headerToken, w.token(uidB, 60)), http.StatusOK, instB.ID)

	held[0].Close()
	held = held[1:]
	kilntest.Poll(t, 10*time.Second, "a connection of A served once another is let go", func() bool {
		c, err := dialAs(uidA, w.addr)
		if err != nil {
			return false
		}
		defer c.Close()
		resp, err := get(c)
		return err == nil && resp.StatusCode == http.StatusOK
	}, func() string { return fmt.Sprint("connections counted: ", w.srv.conns) })
}

// getInstanceID asks for instance-id over c, an HTTP/1.1 connection it leaves open.
func getInstanceID(c net.Conn) (*http.Response, string, error) {
	if _, err := io.WriteString(c, "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// netnsEnv, set, says TestDNAT runs in the network namespace of its own it was started
// in.
const netnsEnv = "KILN_IMDS_TEST_NETNS"

// TestDNAT: in a network namespace of its own, an nftables rule like kilnd's sends a
// QEMU user's connections for 127.0.0.1:80 to the listener. The socket keeps
// 127.0.0.1:80 as its remote address, so the server answers it as its instance when
// told that address (WithRedirectsFrom) and refuses it when not.
func TestDNAT(t *testing.T) {
	if os.Getenv(netnsEnv) == "" {
		if os.Geteuid() != 0 {
			kilntest.Missing(t, "TestDNAT makes a network namespace: run it as root")
		}
		kilntest.Need(t, "nft")
		cmd := kilntest.Command(t, os.Args[0], "-test.run=^TestDNAT$", "-test.v", "-test.count=1", "-test.timeout=1m")
		cmd.Env = append(os.Environ(), netnsEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestDNAT") {
			t.Fatalf("TestDNAT in a network namespace of its own: %v\n%s", err, out)
		}
		return
	}
	loUp(t)
	nft := kilntest.Need(t, "nft")
	told := start(t, WithRedirectsFrom(netip.MustParseAddrPort("127.0.0.1:80")))
	untold := start(t)
	rules := fmt.Sprintf(`table ip imdstest {
	chain metadata {
		type nat hook output priority -100; policy accept;
		meta skuid %[1]d ip daddr 127.0.0.1 tcp dport 80 dnat to 127.0.0.1:%[2]d
		meta skuid %[1]d ip daddr 127.0.0.1 tcp dport 81 dnat to 127.0.0.1:%[3]d
	}
}
`, uidA, told.addr.Port(), untold.addr.Port())
	cmd := kilntest.Command(t, nft, "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f -: %v: %s\n%s", err, out, rules)
	}
	for _, tc := range []struct {
		port uint16
		code int
		body string
	}{{80, http.StatusOK, instA.ID}, {81, http.StatusForbidden, ""}} {
		c, err := dialAs(uidA, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), tc.port))
		if err != nil {
			t.Fatal(err)
		}
		resp, body, err := getInstanceID(c)
		if err != nil || resp.StatusCode != tc.code || (tc.code == http.StatusOK && body != tc.body) {
			t.Errorf("A, through the DNAT of 127.0.0.1:%d: %v, %q, %v; want %d %q", tc.port, resp, body, err, tc.code, tc.body)
		}
		c.Close()
	}
}

// loUp brings up the loopback interface, as a new network namespace has it down.
func loUp(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("lo up: %v", err)
	}
}

// TestPeerIsTheProcessUID: a shell run as a QEMU user's uid, speaking HTTP over
// /dev/tcp, is answered as that uid's instance; run as a uid of no instance, it gets
// 403.
func TestPeerIsTheProcessUID(t *testing.T) {
	w := start(t)
	bash := kilntest.Need(t, "bash")
	ask := func(uid uint32) string {
		cmd := kilntest.Command(t, bash, "-c", `exec 3<>/dev/tcp/127.0.0.1/"$1" &&
			printf 'GET /latest/meta-data/instance-id HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n' >&3 &&
			cat <&3`, "client", strconv.Itoa(int(w.addr.Port())))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		cmd.Dir = "/"
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("the shell as %d: %v: %s", uid, err, stderr.String())
		}
		return string(out)
	}
	if out := ask(uidA); !strings.HasPrefix(out, "HTTP/1.0 200 OK\r\n") || !strings.HasSuffix(out, "\r\n\r\n"+instA.ID) {
		t.Errorf("the shell as A's QEMU user (%d): %q; want 200 and %s", uidA, out, instA.ID)
	}
	if out := ask(uidNone); !strings.HasPrefix(out, "HTTP/1.0 403 Forbidden\r\n") {
		t.Errorf("the shell as %d, no instance's: %q; want 403", uidNone, out)
	}
}

// FuzzRoute: any path is found in the tree or not, never panics; a directory found
// lists only entries found beneath it; a path with . or .. in it finds nothing.
func FuzzRoute(f *testing.F) {
	for _, p := range []string{"/", "/latest/meta-data/", "/latest/meta-data/public-keys/0/openssh-key",
		"/2009-04-04/dynamic/instance-identity/document", "/latest/meta-data/../user-data", "//", "latest", "/latest/api/token"} {
		f.Add(p)
	}
	s := &Server{zone: DefaultZone}
	root := s.root(instA)
	f.Fuzz(func(t *testing.T, path string) {
		segs, ok := split(path)
		if !ok {
			return
		}
		n, found := find(root, segs)
		for _, seg := range segs {
			if found && (seg == "." || seg == "..") {
				t.Fatalf("%q found", path)
			}
		}
		if !found || n.entries == nil {
			return
		}
		body, _ := n.answer()
		for _, line := range strings.Split(string(body), "\n") {
			name, _, _ := strings.Cut(strings.TrimSuffix(line, "/"), "=")
			if _, ok := find(n, []string{name}); !ok {
				t.Fatalf("%q lists %q, which is not found", path, line)
			}
		}
	})
}
