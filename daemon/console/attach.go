package console

import (
	"context"
	"io"
	"net"
	"sync"
)

// relayChunk is how much of the guest's output the relay reads at once; relayQueue is
// how many such reads it holds for a client that reads slower than the guest writes.
const (
	relayChunk = 4 << 10
	relayQueue = 256
)

// Relay joins an attached client to the guest's serial console until one of them
// closes or ctx ends, then closes both. What the client sends, the guest reads (at the
// guest's pace). What the guest writes is read from the console at once, always: a
// client that reads too slowly (a terminal on hold, a slow link) misses some of the
// live output, never slows the guest down or holds its console back. The console
// file (written by QEMU, not through here) keeps all of it. Relay returns how many bytes
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
	var mu sync.Mutex
	go func() { // the guest's output: read steadily, queued, dropped when the queue is full
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
			if err != nil { // the guest's QEMU exited, or the relay ends
				return
			}
		}
	}()
	writerDone := make(chan struct{})
	go func() { // to the client; once the guest's side ends, the client is sent the rest
		defer close(writerDone)
		defer closeAll()
		for b := range out {
			if _, err := client.Write(b); err != nil {
				closeAll()
			}
		}
	}()
	// The client's input, to the guest, until the client detaches or either side closes.
	io.Copy(guest, client)
	closeAll()
	<-writerDone
	mu.Lock()
	defer mu.Unlock()
	return missed
}
