package peer

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/settings"
)

// connected returns the served ends of connections to a listener limited by l, one for
// each count in passing, on each of which the client sent one byte with that many
// descriptors (none: the byte alone).
func connected(t *testing.T, l *Limiter, passing []int) []*fileConn {
	t.Helper()
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener(ul, l)
	t.Cleanup(func() { ln.Close() })
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	var served []*fileConn
	for _, n := range passing {
		c, err := net.Dial("unix", ul.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		var rights []byte
		if n > 0 {
			rights = syscall.UnixRights(slices.Repeat([]int{int(null.Fd())}, n)...)
		}
		if _, _, err := c.(*net.UnixConn).WriteMsgUnix([]byte("G"), rights, nil); err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		served = append(served, s.(*fileConn))
	}
	return served
}

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
	served := connected(t, l, slices.Repeat([]int{each}, conns))
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
		mu.Lock()
		most = max(most, open()-base)
		mu.Unlock()
		time.Sleep(50 * time.Millisecond) // the others may receive meanwhile
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
	// Slack of 1 for the descriptor the counting itself opens.
	if most > limit+1 {
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

// TestOneReceiveTakesNoRoomFromAnother: a caller's receive of plain bytes reserves room
// for descriptors that might come; while it does, another of the caller's connections
// passing a file within the limit waits for it rather than finding no room.
func TestOneReceiveTakesNoRoomFromAnother(t *testing.T) {
	lim := settings.Limits{ConnectionsPerUser: 64, Connections: 1024, FilesPerUser: maxPassedFiles, Files: maxPassedFiles}
	l := NewLimiter(uint32(os.Getuid()), func() (settings.Limits, string) { return lim, "" })
	served := connected(t, l, []int{0, 1})
	inFirst, leave := make(chan struct{}), make(chan struct{})
	var once sync.Once
	received = func(int) { once.Do(func() { close(inFirst); <-leave }) }
	defer func() { received = func(int) {} }()

	read := func(s *fileConn, done chan<- error) {
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := s.Read(make([]byte, 8))
		done <- err
	}
	first, second := make(chan error, 1), make(chan error, 1)
	go read(served[0], first) // the plain byte: held in its receive, its room reserved
	<-inFirst
	go read(served[1], second)
	time.Sleep(100 * time.Millisecond) // time for the second to reach its receive
	close(leave)
	for _, done := range []chan error{first, second} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(served[1].files); n != 1 {
		t.Errorf("the connection passing one file kept %d; want 1", n)
	}
}
