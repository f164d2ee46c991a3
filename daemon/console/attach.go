package console

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// relayChunk is how much of the guest's output the relay reads at once; relayQueue is
// how many such reads it holds for a client that reads slower than the guest writes.
const (
	relayChunk = 4 << 10
	relayQueue = 256
)

// relayDrain bounds how long, after the client detached, the relay waits for QEMU to take
// what the client sent last: QEMU reads the console's socket only as fast as the
// guest's serial port takes bytes, and drops what is left unread when the connection
// closes.
var relayDrain = 5 * time.Second

// Relay joins an attached client to the guest's serial console until one of them
// closes or ctx ends, then closes both. What the client sends, the guest reads (at the
// guest's pace), all of it even when the client detaches at once after sending it.
// What the guest writes is read from the console at once, always: a client that reads
// too slowly (a terminal on hold, a slow link) misses some of the live output, never
// slows the guest down or holds its console back. The console file (written by QEMU,
// not through here) keeps all of it. When the guest's side ends (its QEMU exited), the
// client gets what was read before its connection closes. Relay returns how many bytes
// of output the client missed.
func Relay(ctx context.Context, guest net.Conn, client io.ReadWriteCloser) (missed int64) {
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			guest.Close()
			client.Close()
		})
	}
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()

	out := make(chan []byte, relayQueue)
	guestDone := make(chan struct{})
	var mu sync.Mutex
	go func() { // the guest's output: read steadily, queued, dropped when the queue is full
		// Once the guest's side has ended, a client that neither reads what is left nor
		// closes has relayDrain to do so; then both sides close.
		defer time.AfterFunc(relayDrain, closeAll)
		defer close(guestDone)
		defer close(out)
		for {
			b := make([]byte, relayChunk)
			n, err := guest.Read(b)
			if n > 0 {
				select {
				case out <- b[:n]:
				default:
					mu.Lock()
					missed += int64(n)
					mu.Unlock()
				}
			}
			if err != nil { // QEMU exited, or closed the connection after a detach
				return
			}
		}
	}()
	writerDone := make(chan struct{})
	go func() { // to the client, until its connection fails; the guest is read on
		defer close(writerDone)
		ok := true
		for b := range out {
			if ok {
				_, err := client.Write(b)
				ok = err == nil
			}
		}
		client.Close() // the guest's side ended: the client has had all
	}()
	// The client's input, to the guest, until the client detaches or either side closes.
	io.Copy(guest, client)
	// Half-close: QEMU reads what is left, then the end, and closes its side (the guest's
	// output is read meanwhile). A close would make it drop what it had not read yet.
	if cw, ok := guest.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		t := time.NewTimer(relayDrain)
		select {
		case <-guestDone:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	closeAll()
	<-writerDone
	mu.Lock()
	defer mu.Unlock()
	return missed
}
