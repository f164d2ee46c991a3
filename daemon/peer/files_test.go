package peer

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/settings"
)

// TestPassedFilesNeverPastTheLimit: eight connections of one caller each pass 32
// descriptors, and all eight are read at once, each receive held open for a while. The
// process never holds more of them than the caller's limit (32), not even for a moment,
// and exactly that many are kept; the counts go back to nothing when the connections
// close. (Reading first and counting after, as kilnd once did, held 256 here, and held
// 220 descriptors in TestOneUserCannotExhaustKilnd on a busy machine.)
func TestPassedFilesNeverPastTheLimit(t *testing.T) {
	const conns, each, limit = 8, 32, 32
	lim := settings.Limits{ConnectionsPerUser: 64, Connections: 1024, FilesPerUser: limit, Files: limit}
	// The test's own uid is kilnd's here: held to the total, which is the limit.
	l := NewLimiter(uint32(os.Getuid()), func() (settings.Limits, string) { return lim, "" })
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener(ul, l)
	defer ln.Close()

	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	fds := make([]int, each)
	for i := range fds {
		fds[i] = int(null.Fd())
	}
	var clients []net.Conn
	var served []*fileConn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range conns {
		c, err := net.Dial("unix", ul.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		if _, _, err := c.(*net.UnixConn).WriteMsgUnix([]byte("G"), syscall.UnixRights(fds...), nil); err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		served = append(served, s.(*fileConn))
	}

	open := func() int {
		d, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Error(err)
		}
		return len(d)
	}
	base := open()
	var mu sync.Mutex
	most := 0
	received = func(int) {
		n := open() - base
		mu.Lock()
		most = max(most, n)
		mu.Unlock()
		time.Sleep(50 * time.Millisecond) // the others receive meanwhile
	}
	defer func() { received = func(int) {} }()

	var wg sync.WaitGroup
	for _, s := range served {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.SetReadDeadline(time.Now().Add(10 * time.Second))
			b := make([]byte, 8)
			if n, err := s.Read(b); n != 1 || err != nil {
				t.Errorf("read %d bytes (%v); want the 1 sent", n, err)
			}
		}()
	}
	wg.Wait()
	kept := 0
	for _, s := range served {
		kept += len(s.files)
	}
	t.Logf("descriptors held at most %d more than before the reads; %d kept", most, kept)
	// Slack of 2 for the descriptors the counting itself opens.
	if most > limit+2 {
		t.Errorf("held %d passed descriptors at once; want at most the limit, %d", most, limit)
	}
	if kept != limit || l.files[uint32(os.Getuid())] != limit {
		t.Errorf("kept %d, counted %d; want the limit, %d", kept, l.files[uint32(os.Getuid())], limit)
	}
	for _, s := range served {
		s.Close()
	}
	if l.totalFiles != 0 || l.totalConns != 0 {
		t.Errorf("after closing: %d descriptors and %d connections counted; want none", l.totalFiles, l.totalConns)
	}
	if n := open() - base; n > -conns {
		t.Errorf("after closing: %d descriptors more than before the reads; want %d fewer (the connections)", n, conns)
	}
}
