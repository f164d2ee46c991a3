package kilntest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// netnsEnv, set, says the test runs in the network namespace of its own that OwnNetns
// started it in.
const netnsEnv = "KILN_TEST_OWN_NETNS"

// OwnNetns runs the calling test again, alone, in a network namespace of its own (its
// own loopback, its own nftables tables) and reports whether this is that run: the
// first run returns false once the second has passed (and fails the test when it did
// not); the second brings its loopback up and returns true. It needs root.
func OwnNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == t.Name() {
		Run(t, "ip", "link", "set", "lo", "up")
		return true
	}
	if os.Geteuid() != 0 {
		Missing(t, "%s makes a network namespace: run it as root", t.Name())
	}
	Need(t, "ip")
	cmd := Command(t, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), netnsEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s in a network namespace of its own: %v\n%s", t.Name(), err, out)
	}
	return false
}

// Run runs a command that must succeed, failing the test with its output otherwise.
func Run(t testing.TB, argv ...string) {
	t.Helper()
	if out, err := Command(t, argv...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// RemoteHost is another host on this host's network: a network namespace joined to this
// one by a veth pair, at Addr (this side of the pair has Gateway). Listen opens a TCP
// listener there. It goes when the test ends.
type RemoteHost struct {
	Addr, Gateway string
	ns            string
}

// NewRemoteHost makes a RemoteHost (it needs root and ip), on 10.199.N.0/30 for a
// small N of its own.
func NewRemoteHost(t testing.TB) *RemoteHost {
	t.Helper()
	Need(t, "ip")
	n := os.Getpid() % 250
	name := fmt.Sprintf("kilntest%d", os.Getpid())
	h := &RemoteHost{Addr: fmt.Sprintf("10.199.%d.2", n), Gateway: fmt.Sprintf("10.199.%d.1", n), ns: name}
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { Command(t, "ip", "netns", "del", name).Run() })
	host, peer := "kh"+fmt.Sprint(os.Getpid()), "kp"+fmt.Sprint(os.Getpid())
	Run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { Command(t, "ip", "link", "del", host).Run() })
	Run(t, "ip", "link", "set", peer, "netns", name)
	Run(t, "ip", "addr", "add", h.Gateway+"/30", "dev", host)
	Run(t, "ip", "link", "set", host, "up")
	for _, argv := range [][]string{{"addr", "add", h.Addr + "/30", "dev", peer}, {"link", "set", peer, "up"}, {"link", "set", "lo", "up"}} {
		Run(t, append([]string{"ip", "-n", name}, argv...)...)
	}
	return h
}

// Listen opens a TCP listener on the remote host's address and port (0: any), made in
// its namespace by a thread that enters it and then ends; the listener stays there.
func (h *RemoteHost) Listen(t testing.TB, port int) net.Listener {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread, in another namespace, ends with the goroutine
		fd, err := unix.Open(filepath.Join("/run/netns", h.ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, err}
			return
		}
		ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", h.Addr, port))
		ch <- result{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen in network namespace %s: %v", h.ns, r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}
