package console

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// An instance's serial console is a file QEMU appends to (O_APPEND) for as long as it
// runs, every boot after the last. A guest can write to it as fast as it likes, so kilnd
// keeps it as a ring: it punches holes in its head (FALLOC_FL_PUNCH_HOLE with
// FALLOC_FL_KEEP_SIZE) so that only about the last consoleLimitMiB stay on disk, and
// nothing reads more than that. Offsets keep their meaning (the size never shrinks:
// ConsoleStart and readiness's progress stay valid, and QEMU's appends land where they
// always would); the dropped head reads as zeros, which no reader sends. See
// docs/decisions.md, "The console is a ring".

const (
	// consoleChunk is how much of a console a reader holds at once.
	consoleChunk = 64 << 10
	// punchAlign: holes are punched in whole filesystem blocks, so that they free
	// space rather than zero part of a block.
	punchAlign = 4 << 10
	// markerTail is how much of what it read a readiness scan keeps for the next read,
	// so that a ready line split between two reads still matches: more than any ready
	// line's marker.
	markerTail = 256
	// trimEvery is how often kilnd trims the consoles of running instances. A console
	// takes at most the limit plus what its guest writes in this time.
	trimEvery = time.Second
	// readyFile, in the instance directory, holds the ConsoleStart of the boot whose
	// ready line kilnd has seen: the ring may drop that line while the guest runs, and a
	// kilnd started again must not take the guest for unready.
	readyFile = "console.ready"
)

// ringStart is where a reader that wants the console from off begins: not before the
// last limit bytes of size, nor inside the hole punched at the head (the limit may have
// been lowered, or raised after a trim). It is size when nothing is left to read.
func ringStart(f *os.File, off, size, limit int64) int64 {
	start := max(off, size-limit, 0)
	if start >= size {
		return size
	}
	// SEEK_DATA: the first byte at or after start that is not in a hole. A filesystem
	// without holes answers start itself.
	d, err := f.Seek(start, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO): // a hole from start to the end
		return size
	case err != nil:
		return start
	}
	return min(max(d, start), size)
}

// trimEnd is where the head of a console of size ends, to keep its last limit bytes
// (rounded to keep whole blocks).
func trimEnd(size, limit int64) int64 {
	return max(0, (size-limit)/punchAlign*punchAlign)
}

// punchHead drops the console's bytes in [from, to) (both multiples of punchAlign) and
// frees their blocks; the file keeps its size.
func punchHead(f *os.File, from, to int64) error {
	if to <= from {
		return nil
	}
	return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, from, to-from)
}

// punchUnsupported says the filesystem cannot punch holes.
func punchUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)
}

// readyScan is how far the readiness check has read an instance's console since QEMU
// last started, so that each check reads only what came since the last.
type readyScan struct {
	start int64  // the ConsoleStart it counts from
	next  int64  // the first byte not read yet
	found bool   // a ready line came after start
	at    int64  // when found: the end of the read it was in
	tail  []byte // the last bytes read (at most markerTail), for a line split between reads
}

// reset starts over from start (QEMU started again, or the guest was rebooted).
func (rs *readyScan) reset(start int64) {
	*rs = readyScan{start: start, next: start}
}

// scan reads r from max(from, rs.next) to to, in chunks of consoleChunk, until it finds
// a ready line. A from past rs.next means the bytes between are gone (dropped from the
// ring): the scan goes on after them, with no tail. It never reads before rs.start.
func (rs *readyScan) scan(r io.ReaderAt, from, to int64) error {
	if from > rs.next {
		rs.next, rs.tail = from, rs.tail[:0]
	}
	if rs.found || rs.next >= to {
		return nil
	}
	buf := make([]byte, markerTail+consoleChunk)
	for rs.next < to {
		n := copy(buf, rs.tail)
		k, err := r.ReadAt(buf[n:n+int(min(consoleChunk, to-rs.next))], rs.next)
		if k == 0 {
			if err == nil || err == io.EOF { // shorter than it was: nothing more to read
				return nil
			}
			return err
		}
		rs.next += int64(k)
		b := buf[:n+k]
		if readyIn(b) {
			rs.found, rs.at, rs.tail = true, rs.next, nil
			return nil
		}
		rs.tail = append(rs.tail[:0], b[max(0, len(b)-markerTail):]...)
	}
	return nil
}

// ReadyMarker matches the console lines by which a guest says it is ready: the test
// guest's, and cloud-init's last line ("Cloud-init v. 24.1 finished at …"; its earlier
// lines, "Cloud-init v. 24.1 running 'init' at …", do not count).
var ReadyMarker = regexp.MustCompile(`KILN-GUEST ready|Cloud-init v\. \S+ finished at `)

// readyHints are literal parts of ReadyMarker's lines, one of which every match holds:
// bytes.Contains finds them at memory speed, where the regexp alone reads a console at
// about 11 MB/s (BenchmarkReadyScan).
var readyHints = [][]byte{[]byte("KILN-GUEST ready"), []byte(" finished at ")}

// readyIn reports whether b holds a ready line.
func readyIn(b []byte) bool {
	for _, h := range readyHints {
		if bytes.Contains(b, h) {
			return ReadyMarker.Match(b)
		}
	}
	return false
}

// Console is what the tracker needs to know of an instance's console: where it is, the
// offset its current boot began at (record.Instance.ConsoleStart), and whether its
// QEMU runs.
type Console struct {
	ID      string
	Path    string
	Start   int64
	Running bool
}

// Tracker holds what kilnd knows of each console it reads or trims: the readiness scan
// and how far the head is punched. Safe for concurrent use.
type Tracker struct {
	// Limit gives how many of a console's last bytes kilnd keeps (settings).
	Limit func() int64

	mu  sync.Mutex
	all map[string]*state
}

// state is one instance's; mu is held while its console is scanned or trimmed,
// so concurrent views of an instance read each new byte once, between them.
type state struct {
	mu      sync.Mutex
	ready   readyScan
	scanned bool  // ready holds a scan (of some Start)
	punched int64 // below this the head is a hole (as far as this kilnd punched)
	noPunch bool  // the filesystem cannot punch holes (said once)
	warned  bool  // a punch failed otherwise (said once; tried again each time)
}

// state returns the instance's console state, made on first use.
func (t *Tracker) state(id string) *state {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.all == nil {
		t.all = map[string]*state{}
	}
	cs := t.all[id]
	if cs == nil {
		cs = &state{}
		t.all[id] = cs
	}
	return cs
}

// tracked reports whether kilnd holds a state for the instance.
func (t *Tracker) tracked(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.all[id] != nil
}

// drop forgets the instance's console state.
func (t *Tracker) drop(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.all, id)
}

// keepOnly forgets the states of instances not in ids (gone: a failed launch, a
// terminated instance forgotten).
func (t *Tracker) keepOnly(ids map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.all {
		if !ids[id] {
			delete(t.all, id)
		}
	}
}

// scanReady brings the console's readiness scan up to f's end (f the console, open),
// starting over when QEMU started again since the last scan. The caller holds cs.mu.
func (t *Tracker) scanReady(cs *state, c Console, f *os.File, size int64) error {
	if !cs.scanned || cs.ready.start != c.Start {
		cs.ready.reset(c.Start)
		cs.scanned = true
		cs.ready.found = readySeen(c)
	}
	if cs.ready.found {
		return nil
	}
	err := cs.ready.scan(f, ringStart(f, cs.ready.next, size, t.Limit()), size)
	if cs.ready.found {
		t.noteGuest(c, f, cs.ready.at)
		noteReady(c)
	}
	return err
}

// readySeen reports whether readyFile says this boot's ready line was seen.
func readySeen(c Console) bool {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(c.Path), readyFile))
	if err != nil {
		return false
	}
	start, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return err == nil && start == c.Start
}

// noteReady writes readyFile for this boot (a new file renamed over the old: a crash
// leaves one or the other).
func noteReady(c Console) {
	dir := filepath.Dir(c.Path)
	tmp := filepath.Join(dir, readyFile+".new")
	err := os.WriteFile(tmp, []byte(strconv.FormatInt(c.Start, 10)+"\n"), 0o600)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, readyFile))
	}
	if err != nil {
		log.L.WithError(err).WithField("instance", c.ID).Warn("record that the guest is ready; a restarted kilnd reads its console again")
	}
}

// Ready reports whether the console says the guest is ready since QEMU last started. It
// reads only what the guest wrote since the last call (at most the console limit), a
// chunk at a time; once ready, it reads nothing until QEMU starts again.
func (t *Tracker) Ready(c Console) bool {
	cs := t.state(c.ID)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.scanned && cs.ready.start == c.Start && cs.ready.found {
		return true
	}
	f, err := os.Open(c.Path)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false
	}
	if err := t.scanReady(cs, c, f, st.Size()); err != nil {
		log.L.WithError(err).WithField("instance", c.ID).Warn("read the console for readiness")
	}
	return cs.ready.found
}

// trim drops the head of the console past the last limit bytes. For a running
// instance it first reads what it is about to drop for the ready line, so that a guest
// that floods its console is still seen ready. A filesystem that cannot punch holes is
// said once per instance, and not tried again: the console then grows on disk as QEMU
// writes, though readers still read only its last limit bytes.
func (t *Tracker) trim(ctx context.Context, c Console) {
	st, err := os.Stat(c.Path)
	if err != nil {
		return
	}
	end := trimEnd(st.Size(), t.Limit())
	cs := t.state(c.ID)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if end <= cs.punched || cs.noPunch {
		return
	}
	f, err := os.OpenFile(c.Path, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	l := log.G(ctx).WithField("instance", c.ID).WithField("path", c.Path)
	if c.Running {
		if err := t.scanReady(cs, c, f, st.Size()); err != nil {
			l.WithError(err).Warn("read the console for readiness")
		}
	}
	switch err := punchHead(f, cs.punched, end); {
	case punchUnsupported(err):
		cs.noPunch = true
		l.WithError(err).Warn("the filesystem cannot punch holes: this console grows on disk as its guest writes (readers still read only its last consoleLimitMiB)")
	case err != nil:
		if !cs.warned {
			l.WithError(err).Warn("trim the console (tried again every second; said once)")
		}
		cs.warned = true
	default:
		cs.punched, cs.warned = end, false
	}
}

// Trim keeps every console within the limit until ctx ends: once at start for every
// console list gives (one may have grown while kilnd was down), then every trimEvery
// for those running, and once more for one that left running since. Each tick also
// reads running consoles for readiness, so that what a guest says of itself when ready
// (noteGuest) is kept even when no one asks.
func (t *Tracker) Trim(ctx context.Context, list func() []Console) {
	for _, c := range list() {
		t.trim(ctx, c)
	}
	tick := time.NewTicker(trimEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cs := list()
		ids := make(map[string]bool, len(cs))
		for _, c := range cs {
			ids[c.ID] = true
			switch {
			case c.Running:
				t.Ready(c)
				t.trim(ctx, c)
			case t.tracked(c.ID):
				t.trim(ctx, c)
				t.drop(c.ID)
			}
		}
		t.keepOnly(ids)
	}
}

// Reader sends a console from the start of its ring on, skipping what the ring
// dropped: a reader slower than the guest loses the oldest lines, never gets zeros.
type Reader struct {
	f     *os.File
	next  int64 // the next byte to send
	limit func() int64
	buf   []byte
}

// NewReader reads the console f from the start of its ring; limit gives the limit in force.
func NewReader(f *os.File, limit func() int64) *Reader {
	return &Reader{f: f, limit: limit, buf: make([]byte, consoleChunk)}
}

// Tail makes the reader start at the last n lines the ring holds (all it holds when it
// holds fewer), so that the next CopyTo sends only those; n = 0 starts at the end. A
// line ends at a \n (the guest's \r\n too); a last line not ended yet counts as one. It
// reads the console backwards from its end, a chunk at a time, no further back than
// the ring's start.
func (r *Reader) Tail(n int) error {
	st, err := r.f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if n <= 0 {
		r.next = size
		return nil
	}
	lo := ringStart(r.f, 0, size, r.limit())
	pos, count := size, 0
	for pos > lo {
		k := min(consoleChunk, pos-lo)
		pos -= k
		b := r.buf[:k]
		if _, err := r.f.ReadAt(b, pos); err != nil && err != io.EOF {
			return err
		}
		for i := len(b) - 1; i >= 0; i-- {
			// The console's last byte, when a \n, ends the last line rather than
			// beginning one after it.
			if b[i] != '\n' || pos+int64(i) == size-1 {
				continue
			}
			if count++; count == n {
				r.next = pos + int64(i) + 1
				return nil
			}
		}
	}
	r.next = lo
	return nil
}

// CopyTo sends what the console holds from r.next to its end as it is now, a chunk at a
// time (a guest writing fast does not keep one call going).
func (r *Reader) CopyTo(w io.Writer) error {
	st, err := r.f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	for {
		r.next = ringStart(r.f, r.next, size, r.limit())
		if r.next >= size {
			return nil
		}
		k, err := r.f.ReadAt(r.buf[:min(consoleChunk, size-r.next)], r.next)
		if k == 0 {
			if err == nil || err == io.EOF {
				return nil
			}
			return err
		}
		// kilnd punches the head from its start on, so a hole that reached into what
		// was read ends at the first byte that is still data: what was read from there
		// on is what the guest wrote.
		b := r.buf[:k]
		if d := ringStart(r.f, r.next, size, r.limit()); d > r.next {
			b = b[min(d-r.next, int64(k)):]
		}
		r.next += int64(k)
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
}
