package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/client"

	"kiln/internal/kilntest"
)

// floodUserData makes the test guest write to its serial console as fast as it can,
// from the background, while its boot goes on to say it is ready.
const floodUserData = "#!/bin/sh\n" +
	"(yes 'KILN-FLOOD xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' > /dev/ttyS0 2>&1 &)\n"

// consoleDisk is the console file's size and the bytes its blocks take on disk.
func consoleDisk(t *testing.T, path string) (size, disk int64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Size, st.Blocks * 512
}

// rss is a process's resident set (VmRSS) and its peak (VmHWM), in bytes.
func rss(t *testing.T, pid int) (now, peak int64) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			now = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return now, peak
}

// TestConsoleFlood is issue 11's attack: a guest floods its serial console. With
// "consoleLimitMiB": 1 the console takes a few MiB on disk however much the guest
// writes; the guest is still seen ready (its ready line came amid the flood); 40
// inspects at once each answer within a second and grow kilnd by less than 100 MB (they
// took it from 24 MB to 3.18 GB with a 53 MB console when each read the console whole);
// kiln console prints the last MiB, no zeros of the dropped head, and --follow goes on;
// and a kilnd started again while the console grew trims it at once and still knows
// the guest is ready.
func TestConsoleFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	const limit = 1 << 20
	d := shortDir(t)
	if err := os.WriteFile(filepath.Join(d, "kilnd.json"), []byte(`{"consoleLimitMiB": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	k := kilndIn(t, d, "info")
	k.Start()
	t.Cleanup(k.KillQEMUs)
	registerGuest(t, k, "kiln-guest")
	inst := runOne(t, k, api.RunInstancesRequest{Image: "kiln-guest", InstanceType: "nano", UserData: []byte(floodUserData)})
	path := filepath.Join(k.Root, "instances", inst.ID, "console.log")
	evidence := func() string {
		lines := strings.Split(k.Log.String(), "\n")
		return fmt.Sprintf("console tail:\n%s\nqemu.log:\n%s\nkilnd log:\n%s", kilntest.FileTail(path, 10),
			kilntest.FileTail(filepath.Join(k.Root, "instances", inst.ID, "qemu.log"), 20), kilntest.Tail(strings.Join(lines, "\n"), 20))
	}
	// grow waits until the guest wrote n more bytes, checking all along that the disk
	// holds no more than maxDisk of the console (kilnd trims every second).
	grow := func(what string, n, maxDisk int64) {
		t.Helper()
		from, _ := consoleDisk(t, path)
		deadline := time.Now().Add(guestDeadline)
		worst := int64(0)
		for {
			size, disk := consoleDisk(t, path)
			worst = max(worst, disk)
			if disk > maxDisk {
				t.Fatalf("%s: the console takes %d bytes on disk (size %d), over %d\n%s", what, disk, size, maxDisk, evidence())
			}
			if size-from >= n {
				t.Logf("%s: the guest wrote %d bytes; at most %d on disk", what, size-from, worst)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the guest wrote %d bytes in %s, want %d\n%s", what, size-from, guestDeadline, n, evidence())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ready := func(what string) {
		t.Helper()
		got, err := k.WaitInstance(guestCtx(t), inst.ID, "ready")
		if err != nil || !got.Ready {
			t.Fatalf("%s: wait ready: %+v, %v\n%s", what, got, err, evidence())
		}
	}

	ready("flooding")
	grow("flooding", 8*limit, 4*limit)

	// 40 inspects at once, five times: each within 5 s (a few ms here; the floods once
	// held them to their deadline), kilnd's peak resident set
	// (VmHWM, reset first) within 100 MB of where it was.
	pid := k.Cmd.Process.Pid
	before, _ := rss(t, pid)
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Logf("cannot reset kilnd's peak resident set (%v); it counts from kilnd's start", err)
	}
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make([]error, 40)
		for i := range errs {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				start := time.Now()
				got, err := client.New(k.Socket).Instance(ctx, inst.ID)
				switch took := time.Since(start); {
				case err != nil:
					errs[i] = err
				case took > 5*time.Second:
					errs[i] = fmt.Errorf("answered in %s", took)
				case !got.Ready:
					errs[i] = fmt.Errorf("not ready: %+v", got)
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d, inspect %d: %v", round, i, err)
			}
		}
	}
	now, peak := rss(t, pid)
	t.Logf("kilnd's resident set: %d MB before 5 rounds of 40 inspects at once, %d MB at most during, %d MB after", before>>20, peak>>20, now>>20)
	if peak-before > 100<<20 {
		t.Errorf("40 inspects at once took kilnd from %d MB to %d MB", before>>20, peak>>20)
	}

	// kiln console: the ring, no zeros of the dropped head.
	out, err := kilntest.Command(t, kilnBin, "--socket", k.Socket, "console", inst.ID).Output()
	if err != nil {
		t.Fatalf("kiln console: %v\n%s", err, evidence())
	}
	if len(out) > limit || len(out) < limit/2 || bytes.IndexByte(out, 0) >= 0 || !bytes.Contains(out, []byte("KILN-FLOOD x")) {
		t.Errorf("kiln console printed %d bytes (want at most %d, the flood's lines, no zeros); they begin %q", len(out), limit, out[:min(len(out), 80)])
	}
	// kiln console --follow goes on with what the guest writes next.
	fctx, cancel := context.WithTimeout(context.Background(), guestDeadline)
	defer cancel()
	fw := &followWriter{want: 3 * limit, cancel: cancel}
	if err := k.Console(fctx, inst.ID, true, fw); err != nil || fw.n < fw.want || fw.zeros {
		t.Errorf("console --follow: %d bytes (want %d), zeros %v, %v\n%s", fw.n, fw.want, fw.zeros, err, evidence())
	}

	// kilnd stopped while the guest floods: the console grows on disk; a kilnd started
	// again trims it at once and knows the guest is ready, though the ring holds no
	// ready line any more.
	k.Stop()
	grow("kilnd stopped", 3*limit, 1<<40)
	if _, disk := consoleDisk(t, path); disk < 3*limit {
		t.Fatalf("with kilnd stopped the console takes only %d bytes on disk: is something else trimming it?", disk)
	}
	k.Start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		size, disk := consoleDisk(t, path)
		if disk <= 2*limit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kilnd started again did not trim the console within 30s: %d bytes on disk (size %d)\n%s", disk, size, evidence())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, err := k.Instance(ctxT(t), inst.ID); err != nil || !got.Ready {
		t.Errorf("after kilnd started again: %+v, %v (want ready)", got, err)
	}
	grow("after the restart", 2*limit, 4*limit)
}

// followWriter counts what a followed console sends, notes zeros, and ends the follow
// once it has want bytes.
type followWriter struct {
	n, want int
	zeros   bool
	cancel  func()
}

func (w *followWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	w.zeros = w.zeros || bytes.IndexByte(p, 0) >= 0
	if w.n >= w.want {
		w.cancel()
	}
	return len(p), nil
}
