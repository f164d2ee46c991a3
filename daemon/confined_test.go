package daemon_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// TestQEMUConfined checks how each instance's QEMU runs: as a user of its own (not
// root, not another instance's), under QEMU's seccomp sandbox, with a command line that
// names no file, holding no file of the data root but those kilnd passed it (its own
// instance's files, its volumes, and store layers read-only), nor a descriptor kilnd
// inherited from its parent, with none of kilnd's environment.
func TestQEMUConfined(t *testing.T) {
	if testing.Short() {
		t.Skip("boots guests")
	}
	k := kilndIn(t, shortDir(t), "debug")
	// Left open by a careless parent, past the descriptors QEMU is given (3, 4, …),
	// which would cover it.
	for range 40 {
		k.Inherited = append(k.Inherited, os.Stdin)
	}
	leak, err := os.Open("/etc/hostname")
	if err != nil {
		t.Fatal(err)
	}
	defer leak.Close()
	k.Inherited = append(k.Inherited, leak)
	k.Env = []string{"KILN_TEST_SECRET=1"}
	k.Start()
	t.Cleanup(k.KillQEMUs)
	registerGuest(t, k, "kiln-guest")
	a := runOne(t, k, api.RunInstancesRequest{Image: "kiln-guest", InstanceType: "nano", UserData: []byte("#!/bin/sh\necho hi\n")})
	b := runOne(t, k, api.RunInstancesRequest{Image: "kiln-guest", InstanceType: "nano"})
	a, b = waitState(t, k, a.ID, "ready"), waitState(t, k, b.ID, "ready")
	uids := map[string]bool{}
	for _, inst := range []api.Instance{a, b} {
		pid := strconv.Itoa(inst.PID)
		status, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			t.Fatal(err)
		}
		var uid string
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) == 5 && f[0] == "Uid:" {
				uid = f[1]
				if f[1] != f[2] || f[1] != f[3] || f[1] != f[4] {
					t.Errorf("QEMU of %s: %s", inst.ID, line)
				}
			}
		}
		if os.Geteuid() == 0 {
			// kilnd's QEMU users: 2,000,000,001 on (daemon/machines.go).
			if n, _ := strconv.Atoi(uid); n <= 2_000_000_000 || n >= 2_000_065_536 || uids[uid] {
				t.Errorf("QEMU of %s runs as uid %s: want one of its own from 2000000001", inst.ID, uid)
			}
		}
		uids[uid] = true
		if !strings.Contains(string(status), "Seccomp:\t2") {
			t.Errorf("QEMU of %s is not under a seccomp filter:\n%s", inst.ID, status)
		}
		// ps, an independent client, sees no QEMU of root's.
		out, err := exec.Command("ps", "-o", "user=,args=", "-p", pid).Output()
		if err != nil || strings.HasPrefix(string(out), "root ") || !strings.Contains(string(out), "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny") {
			t.Errorf("ps of QEMU %s: %v %q", pid, err, out)
		}
		if strings.Contains(string(out), k.Root) {
			t.Errorf("QEMU's command line names a file of the data root: %s", out)
		}
		if env, err := os.ReadFile("/proc/" + pid + "/environ"); err != nil || bytes.Contains(env, []byte("KILN_TEST_SECRET")) {
			t.Errorf("QEMU of %s has kilnd's environment: %v %q", inst.ID, err, env)
		}
		fds, _ := filepath.Glob("/proc/" + pid + "/fd/*")
		own := filepath.Join(k.Root, "instances", inst.ID) + "/"
		blobs := filepath.Join(k.Root, "content", "blobs") + "/"
		for _, fd := range fds {
			target, err := os.Readlink(fd)
			if target == "/etc/hostname" {
				t.Errorf("QEMU of %s holds %s, which kilnd inherited", inst.ID, target)
			}
			if err != nil || !strings.HasPrefix(target, k.Root) {
				continue
			}
			switch {
			case strings.HasPrefix(target, own):
			case strings.HasPrefix(target, blobs):
				n, _ := strconv.Atoi(filepath.Base(fd))
				if flags := kilntest.OpenFlags(t, inst.PID, n); flags&unix.O_ACCMODE != unix.O_RDONLY {
					t.Errorf("QEMU of %s holds store file %s with flags %#o: not read-only", inst.ID, target, flags)
				}
			default:
				t.Errorf("QEMU of %s holds %s, which kilnd did not pass it", inst.ID, target)
			}
		}
	}
}

// TestTamperedLayerRefused changes a layer in the store behind kilnd's back, as the
// attack of issue 11 did (a qcow2 header that names an external data file): a launch
// of the image refuses it with a clear error and boots nothing.
func TestTamperedLayerRefused(t *testing.T) {
	k, im := guestKilnd(t)
	layers, _ := filepath.Glob(filepath.Join(k.Root, "content", "blobs", "sha256", "*"))
	var layer string
	for _, p := range layers {
		if b, err := os.ReadFile(p); err == nil && bytes.HasPrefix(b, []byte("QFI\xfb")) {
			layer = p
		}
	}
	if layer == "" {
		t.Fatal("no qcow2 layer in the store")
	}
	f, err := os.OpenFile(layer, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var feats [8]byte
	f.ReadAt(feats[:], 72)
	binary.BigEndian.PutUint64(feats[:], binary.BigEndian.Uint64(feats[:])|1<<2) // the data-file bit
	if _, err := f.WriteAt(feats[:], 72); err != nil {
		t.Fatal(err)
	}
	f.Close()

	_, err = k.RunInstances(ctxT(t), api.RunInstancesRequest{Image: im.ID, InstanceType: "nano"})
	if err == nil || !strings.Contains(err.Error(), filepath.Base(layer)) || !strings.Contains(err.Error(), "external data file") ||
		!strings.Contains(err.Error(), "not used") {
		t.Fatalf("launch of a tampered layer: %v", err)
	}
	insts, err := k.Instances(ctxT(t), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		if inst.State != "terminated" {
			t.Errorf("instance %s is %s after a refused launch", inst.ID, inst.State)
		}
	}
}
