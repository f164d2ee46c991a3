package daemon_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kiln/internal/kilntest"
)

// TestRegisterCallerHoldsNoStoreFile replays the attack on register of issue 11: a caller
// who reached, through /proc/PID/fd, the descriptor her own conversion process held on
// the layer being written kept it and rewrote the layer after its digest was taken;
// content is shared, so every user of that layer got her blob. While an ordinary user
// registers a disk large enough to take a while, every process running as that user is
// scanned again and again: none may hold a descriptor on (or sit in) anything under the
// data root, and no file under the root may belong to that user, during the register or
// after it; the process holding her disk holds nothing but it, sockets and stdio. The
// scan must see the user's side of the conversion (a process of hers
// holding her disk), or it proved nothing.
func TestRegisterCallerHoldsNoStoreFile(t *testing.T) {
	if testing.Short() {
		t.Skip("registers a 512 MiB disk")
	}
	d := publicDir(t)
	k := kilndIn(t, d, "info")
	alice := accounts(t, k.Socket)["alice"]
	k.Start()
	size := int64(512 << 20)
	if kilntest.Race { // the race detector slows the scan: a longer conversion for it to see
		size = 2 << 30
	}
	disk := randomDisk(t, d, size)
	if err := os.Chmod(disk, 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.EvalSymlinks(k.Root)
	if err != nil {
		t.Fatal(err)
	}
	uid := alice.cred.Uid

	id := alice.ok("image", "register", "big", "--disk", disk+",format=raw", "-q")
	held, owned := map[string]bool{}, map[string]bool{} // what was seen, once each
	sawDisk, scans := false, 0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for state := "pending"; state == "pending"; {
		for _, proc := range kilntest.ProcessesAs(uid) {
			p := strconv.Itoa(proc.PID)
			fds := descriptorsOf(p)
			holdsDisk := false
			for fd, target := range fds {
				if target == disk {
					sawDisk, holdsDisk = true, true
				}
				if inside(target, root) {
					held[fmt.Sprintf("pid %s (%s) holds %s on %s", p, comm(p), fd, target)] = true
				}
			}
			// The caller's side of the conversion was given her disk, the listening socket
			// and stdio; it opens its own event descriptors, /proc, /sys and /dev files and
			// (while the loader runs, and for modules later) shared libraries, no other file.
			for fd, target := range fds {
				if holdsDisk && strings.HasPrefix(fd, "fd ") && target != disk && target != "/dev/null" &&
					!hasAnyPrefix(target, "socket:[", "pipe:[", "anon_inode:", "/proc/", "/sys/", "/dev/",
						"/usr/lib/", "/lib/", "/lib64/", "/etc/ld.so.cache") {
					held[fmt.Sprintf("pid %s (%s) holds %s on %s besides the disk", p, comm(p), fd, target)] = true
				}
			}
		}
		for _, f := range filesOwnedBy(root, uid) {
			owned[f+" during the register"] = true
		}
		scans++
		im, err := k.Image(ctx, id)
		if err != nil {
			t.Fatalf("image %s after %d scans: %v\nkilnd log:\n%s", id, scans, err, k.Log.String())
		}
		state = im.State
		if state == "failed" {
			t.Fatalf("register failed: %s", im.StateReason)
		}
	}
	for _, f := range filesOwnedBy(root, uid) {
		owned[f+" after the register"] = true
	}
	t.Logf("%d scans during the register", scans)
	if len(held) > 0 {
		t.Errorf("processes of the caller's (uid %d) held descriptors in the store %s:\n%s", uid, root, lines(held))
	}
	if len(owned) > 0 {
		t.Errorf("files in the store belonged to the caller (uid %d):\n%s", uid, lines(owned))
	}
	if !sawDisk {
		t.Errorf("%d scans never saw a process of the caller's holding her disk %s: the scan proves nothing", scans, disk)
	}
	// The caller's side of the conversion is gone once the register is done.
	for deadline := time.Now().Add(30 * time.Second); ; {
		left := 0
		for _, p := range kilntest.ProcessesAs(uid) {
			for _, target := range descriptorsOf(strconv.Itoa(p.PID)) {
				if target == disk {
					left++
				}
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes of the caller's still hold her disk 30s after the register", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// lines is a set, sorted, one per line.
func lines(set map[string]bool) string {
	var out []string
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// descriptorsOf maps each descriptor of a process (and its working and root
// directories) to what it points at.
func descriptorsOf(pid string) map[string]string {
	out := map[string]string{}
	fds, _ := os.ReadDir(filepath.Join("/proc", pid, "fd"))
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc", pid, "fd", fd.Name())); err == nil {
			out["fd "+fd.Name()] = target
		}
	}
	for _, l := range []string{"cwd", "root"} {
		if target, err := os.Readlink(filepath.Join("/proc", pid, l)); err == nil {
			out[l] = target
		}
	}
	return out
}

func comm(pid string) string {
	b, _ := os.ReadFile(filepath.Join("/proc", pid, "comm"))
	return strings.TrimSpace(string(b))
}

// inside reports whether path is root or under it (a deleted file's " (deleted)" kept).
func inside(path, root string) bool {
	return path == root || strings.HasPrefix(path, root+"/")
}

// filesOwnedBy lists what under root belongs to uid (files vanish as it walks: skipped).
func filesOwnedBy(root string, uid uint32) []string {
	var out []string
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Lstat(path, &st) == nil && st.Uid == uid {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// TestLeftoverExportRemoved: the socket directory of an export that a killed kilnd left
// behind is gone once kilnd starts again.
func TestLeftoverExportRemoved(t *testing.T) {
	k := newKilnd(t)
	left := filepath.Join(k.Root, "run", "nbd-123")
	if err := os.MkdirAll(left, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(left, "s"), nil, 0o600)
	k.Restart()
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("%s after a start: %v", left, err)
	}
}
