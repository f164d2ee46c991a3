package console

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestConsoleRing appends 10 MiB of numbered lines to a file as QEMU does (O_APPEND),
// trimming it to a 1 MiB ring after each MiB: the file keeps its size (offsets keep
// their meaning: a byte is where it was written), the last 1 MiB reads back as written,
// what a reader gets is only that (no zeros from the punched head), and the blocks on
// disk stay near 1 MiB.
func TestConsoleRing(t *testing.T) {
	const limit = 1 << 20
	path := filepath.Join(t.TempDir(), "console.log")
	qemu, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer qemu.Close()
	kilnd, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer kilnd.Close()

	var written bytes.Buffer
	punched := int64(0)
	for mib := 1; mib <= 10; mib++ {
		var chunk bytes.Buffer
		for chunk.Len() < 1<<20 {
			fmt.Fprintf(&chunk, "line %08d of the console\r\n", written.Len()+chunk.Len())
		}
		if _, err := qemu.Write(chunk.Bytes()); err != nil {
			t.Fatal(err)
		}
		written.Write(chunk.Bytes())
		end := trimEnd(int64(written.Len()), limit)
		err := punchHead(kilnd, punched, end)
		if punchUnsupported(err) {
			t.Skipf("the filesystem of %s cannot punch holes: %v", path, err)
		}
		if err != nil {
			t.Fatal(err)
		}
		punched = end

		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != int64(written.Len()) {
			t.Fatalf("after %d MiB: size %d, want %d (offsets must not move)", mib, st.Size, written.Len())
		}
		// Without trimming it would be mib MiB; a few blocks over the limit are the
		// rounding and the filesystem's own.
		if disk := st.Blocks * 512; disk > limit+256<<10 {
			t.Errorf("after %d MiB: %d bytes on disk, want about %d", mib, disk, limit)
		}
	}

	// The last limit bytes are where they were written.
	all := written.Bytes()
	off := int64(len(all) - limit)
	got := make([]byte, limit)
	if _, err := kilnd.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, all[off:]) {
		t.Errorf("the last %d bytes read back differ from those written at %d", limit, off)
	}
	// A reader from 0 starts at the ring's beginning: a suffix of what was written, at
	// least the limit, less than a block more, and no zeros.
	r := NewReader(kilnd, func() int64 { return limit })
	var out bytes.Buffer
	if err := r.CopyTo(&out); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(all, out.Bytes()) || out.Len() < limit || out.Len() >= limit+punchAlign || bytes.IndexByte(out.Bytes(), 0) >= 0 {
		t.Errorf("a reader got %d bytes (want the last %d to %d written, no zeros); they begin %q", out.Len(), limit, limit+punchAlign, out.Bytes()[:min(out.Len(), 40)])
	}
	// The limit raised after the trim: still no zeros (the reader skips the hole).
	r = NewReader(kilnd, func() int64 { return 4 * limit })
	out.Reset()
	if err := r.CopyTo(&out); err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(out.Bytes(), 0) >= 0 || !bytes.HasSuffix(all, out.Bytes()) {
		t.Errorf("with the limit raised, a reader got %d bytes with zeros or not written last", out.Len())
	}
	// A follower gets what comes next, from where it was.
	if _, err := qemu.Write([]byte("the next line\r\n")); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := r.CopyTo(&out); err != nil || out.String() != "the next line\r\n" {
		t.Errorf("follow: %q, %v", out.String(), err)
	}
}

// countingReader is a console read through a readyScan: it records the reads.
type countingReader struct {
	b            []byte
	bytes, reads int
	largest      int
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	c.largest = max(c.largest, len(p))
	if off >= int64(len(c.b)) {
		return 0, io.EOF
	}
	n := copy(p, c.b[off:])
	c.bytes += n
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestReadyScan: the readiness scan reads each byte once, in chunks, and finds a ready
// line split between two chunks, or between two scans; a ready line before ConsoleStart
// (or straddling it) does not count; once found, nothing is read; a reset (QEMU started
// again) counts from the new start.
func TestReadyScan(t *testing.T) {
	noise := strings.Repeat("x", 99) + "\r\n"
	fill := func(n int) string { return strings.Repeat(noise, n/len(noise)+1)[:n] }

	t.Run("split between chunks", func(t *testing.T) {
		con := fill(3*consoleChunk-7) + "KILN-GUEST ready\r\n" + fill(2*consoleChunk)
		c := &countingReader{b: []byte(con)}
		var rs readyScan
		rs.reset(0)
		if err := rs.scan(c, 0, int64(len(con))); err != nil || !rs.found {
			t.Fatalf("found %v, %v", rs.found, err)
		}
		if c.largest > consoleChunk || c.bytes != 4*consoleChunk {
			t.Errorf("read %d bytes, largest read %d: want chunks of at most %d up to the one holding the line", c.bytes, c.largest, consoleChunk)
		}
	})

	t.Run("split between scans", func(t *testing.T) {
		first := fill(5000) + "KILN-GUEST re"
		c := &countingReader{b: []byte(first)}
		var rs readyScan
		rs.reset(0)
		if rs.scan(c, 0, int64(len(first))); rs.found {
			t.Fatal("ready on half a line")
		}
		c.b = append(c.b, "ady\r\n"+fill(70000)...)
		before := c.bytes
		if rs.scan(c, 0, int64(len(c.b))); !rs.found {
			t.Fatal("the line completed by the next write is not found")
		}
		if c.bytes-before > len(c.b)-len(first) {
			t.Errorf("the second scan read %d bytes; only %d were new", c.bytes-before, len(c.b)-len(first))
		}
		// Found: later scans read nothing.
		c.b = append(c.b, fill(1<<20)...)
		before = c.bytes
		rs.scan(c, 0, int64(len(c.b)))
		if c.bytes != before {
			t.Errorf("a scan after the line was found read %d bytes", c.bytes-before)
		}
	})

	t.Run("before ConsoleStart", func(t *testing.T) {
		old := "KILN-GUEST boot gen=0\r\nKILN-GUEST ready\r\nKILN-GUEST poweroff\r\nKILN-GUEST re"
		con := old + "ady\r\n" + "KILN-GUEST boot gen=1\r\n" + fill(3*consoleChunk)
		c := &countingReader{b: []byte(con)}
		var rs readyScan
		rs.reset(int64(len(old)))
		if rs.scan(c, 0, int64(len(con))); rs.found {
			t.Error("a ready line of the boot before (or one straddling ConsoleStart) counts")
		}
		if c.bytes != len(con)-len(old) {
			t.Errorf("read %d bytes; %d come after ConsoleStart", c.bytes, len(con)-len(old))
		}
		// The guest says ready in this boot.
		c.b = append(c.b, "KILN-GUEST ready\r\n"...)
		if rs.scan(c, 0, int64(len(c.b))); !rs.found {
			t.Error("the ready line of this boot is not found")
		}
		// QEMU starts again: what came before counts no more.
		rs.reset(int64(len(c.b)))
		c.b = append(c.b, "KILN-GUEST boot gen=2\r\n"...)
		if rs.scan(c, 0, int64(len(c.b))); rs.found {
			t.Error("ready after a reset, with no ready line since")
		}
	})

	t.Run("bytes dropped by the ring", func(t *testing.T) {
		con := fill(10000) + "KILN-GUEST re" + fill(3*consoleChunk)
		c := &countingReader{b: []byte(con)}
		var rs readyScan
		rs.reset(0)
		rs.scan(c, 0, 5000)
		// The ring dropped what the scan had not read; it goes on from the ring's start.
		from := int64(len(con) - consoleChunk)
		before := c.bytes
		if rs.scan(c, from, int64(len(con))); rs.found || rs.next != int64(len(con)) || c.bytes-before != consoleChunk {
			t.Errorf("after a gap: found %v, next %d, read %d; want not found, %d, %d", rs.found, rs.next, c.bytes-before, len(con), consoleChunk)
		}
		c.b = append(c.b, "ady\r\nKILN-GUEST ready\r\n"...)
		if rs.scan(c, 0, int64(len(c.b))); !rs.found {
			t.Error("the ready line after the gap is not found")
		}
	})
}

// BenchmarkReadyScan is the readiness scan over a console with no ready line: what the
// first look at a flooded 8 MiB console costs (a kilnd started again, a guest that
// never says ready).
func BenchmarkReadyScan(b *testing.B) {
	con := bytes.Repeat([]byte("KILN-FLOOD "+strings.Repeat("x", 88)+"\r\n"), (8<<20)/101)
	b.SetBytes(int64(len(con)))
	r := bytes.NewReader(con)
	for b.Loop() {
		var rs readyScan
		rs.reset(0)
		if err := rs.scan(r, 0, int64(len(con))); err != nil || rs.found {
			b.Fatal(rs.found, err)
		}
	}
}

// TestReadyIn: the literal hints in front of ReadyMarker let through every line it
// matches (those of TestReadyMarker) and keep out those it does not.
func TestReadyIn(t *testing.T) {
	for _, tc := range []struct {
		console string
		ready   bool
	}{
		{"KILN-GUEST boot gen=0\r\nKILN-GUEST ready\r\n", true},
		{"[   17.3] cloud-init[601]: Cloud-init v. 23.4.4-0ubuntu0~22.04.1 finished at Mon, 01 Apr 2024 10:00:12 +0000. Up 17.35 seconds\n", true},
		{"[    9.8] cloud-init[601]: Cloud-init v. 23.4.4-0ubuntu0~22.04.1 running 'modules:final' at Mon, 01 Apr 2024 10:00:09 +0000.\n", false},
		{"the job finished at 10:00\r\n", false},
		{"KILN-GUEST boot gen=0\r\n", false},
	} {
		if got := readyIn([]byte(tc.console)); got != tc.ready || got != ReadyMarker.MatchString(tc.console) {
			t.Errorf("readyIn(%q) = %v, want %v (as ReadyMarker)", tc.console, got, tc.ready)
		}
	}
}
