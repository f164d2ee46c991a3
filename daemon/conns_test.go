package daemon_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rawDial is a bare connection to k's socket, for the tests that misbehave below HTTP.
func rawDial(t *testing.T, k *kilnd) *net.UnixConn {
	t.Helper()
	c, err := net.DialTimeout("unix", k.socket, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", k.socket, err)
	}
	return c.(*net.UnixConn)
}

// waitAnswer waits (bounded) until the server's answer is in c's receive queue, without
// reading it: closing then leaves it unread, which the server sees as ECONNRESET.
func waitAnswer(t *testing.T, c *net.UnixConn) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 1)
	var peekErr error
	if err := raw.Read(func(fd uintptr) bool {
		_, _, peekErr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return !errors.Is(peekErr, syscall.EAGAIN)
	}); err != nil {
		t.Fatalf("no answer within 5s: %v", err)
	}
	if peekErr != nil {
		t.Fatalf("peek at the answer: %v", peekErr)
	}
}

// writeLimits writes k's settings file (read at its start) with the given limits.
func writeLimits(t *testing.T, k *kilnd, limits string) {
	t.Helper()
	f := filepath.Join(filepath.Dir(k.root), "kilnd.json")
	if err := os.WriteFile(f, []byte(`{"limits": `+limits+`}`), 0o644); err != nil {
		t.Fatal(err)
	}
}

// noPanic fails the test when kilnd's log shows a panic recovered by net/http, and
// checks that kilnd still answers.
func noPanic(t *testing.T, k *kilnd) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := k.Info(ctx); err != nil {
		t.Fatalf("kilnd no longer answers: %v", err)
	}
	if s := k.log.String(); strings.Contains(s, "panic") {
		t.Fatalf("kilnd's log shows a panic:\n%s", s[strings.Index(s, "panic"):])
	}
}

// TestListenerSurvivesAbruptClients drives kilnd's real listener the ways a careless or
// hostile client does: closing without reading its answer, stalling in the headers and
// in the body past their deadlines, sending half a request, passing descriptors then
// dropping the connection. Before the fix each of the first two made net/http log
// "panic serving …: bufio: reader returned negative count from Read" (the n = -1 that
// recvmsg returns with an error was passed on).
func TestListenerSurvivesAbruptClients(t *testing.T) {
	k := kilndIn(t, shortDir(t), "debug")
	writeLimits(t, k, `{"readHeaderSeconds": 1, "bodySeconds": 1}`)
	k.start()
	const info = "GET /v1/info HTTP/1.1\r\nHost: kiln\r\n\r\n"

	t.Run("close without reading the answer", func(t *testing.T) {
		for range 5 {
			c := rawDial(t, k)
			if _, err := c.Write([]byte(info)); err != nil {
				t.Fatal(err)
			}
			waitAnswer(t, c)
			c.Close() // the answer unread: kilnd's next read gets ECONNRESET
		}
		noPanic(t, k)
	})
	t.Run("headers past their deadline", func(t *testing.T) {
		c := rawDial(t, k)
		defer c.Close()
		if _, err := c.Write([]byte("GET /v1/info HTTP/1.1\r\nHo")); err != nil {
			t.Fatal(err)
		}
		// kilnd closes the connection when the header deadline (1s) passes.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal("kilnd kept a connection stalled in its headers for 10s")
				}
				break
			}
		}
		noPanic(t, k)
	})
	t.Run("body past its deadline", func(t *testing.T) {
		c := rawDial(t, k)
		defer c.Close()
		req := "POST /v1/volumes HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"size"
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 4096)
		n, err := c.Read(b)
		if err != nil {
			t.Fatalf("no answer to a body stalled past its deadline within 10s: %v", err)
		}
		if !strings.HasPrefix(string(b[:n]), "HTTP/1.1 4") {
			t.Fatalf("a body stalled past its deadline: want a 4xx, got %q", b[:n])
		}
		noPanic(t, k)
	})
	t.Run("half a request then close", func(t *testing.T) {
		for _, part := range []string{"GET /v1/in", "POST /v1/volumes HTTP/1.1\r\nHost: kiln\r\nContent-Length: 50\r\n\r\n{"} {
			c := rawDial(t, k)
			c.Write([]byte(part))
			c.Close()
		}
		noPanic(t, k)
	})
	t.Run("descriptors passed then the connection dropped", func(t *testing.T) {
		f, err := os.Open("/dev/null")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fds := make([]int, 8)
		for i := range fds {
			fds[i] = int(f.Fd())
		}
		for _, part := range []string{"POST /v1/images HTTP/1.1\r\n", info} {
			c := rawDial(t, k)
			if _, _, err := c.WriteMsgUnix([]byte(part), syscall.UnixRights(fds...), nil); err != nil {
				t.Fatal(err)
			}
			if part == info {
				waitAnswer(t, c)
			}
			c.Close()
		}
		noPanic(t, k)
	})
}
