package hypervisor

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kiln/internal/kilntest"
)

// TestHotplugAfterRestart: a disk attached to a running machine and then given a new
// top by a live snapshot is detached whole by a machine that reattached (as after a
// kilnd restart), which knew nothing of its chain: every block node and fd set of it
// is gone from QEMU afterwards. The machine that made the changes kept the depth
// itself: its snapshot needed no node names from the caller.
func TestHotplugAfterRestart(t *testing.T) {
	spec := guestSpec(t)
	dir := spec.Dir
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, err := Start(ctx, "qemu-system-x86_64", spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.kill() })
	waitConsole(t, m, "KILN-GUEST ready", 1)

	data, over := filepath.Join(dir, "vdb.qcow2"), filepath.Join(dir, "vdb.over.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", data, "64M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", data, over)
	f, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.AttachDisk(ctx, Disk{ID: "vdb", Files: []*os.File{f}}, HotplugPort(0)); err != nil {
		t.Fatalf("attach: %v\n%s", err, kilntest.Evidence(dir))
	}
	o, err := os.OpenFile(over, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := m.Snapshot(ctx, []Overlay{{DiskID: "vdb", File: o}}); err != nil {
		t.Fatalf("snapshot: %v\n%s", err, kilntest.Evidence(dir))
	}
	if got := nodesOf(t, ctx, m, "vdb"); len(got) != 4 { // a file and a format node per file
		t.Fatalf("after attach and snapshot, vdb's nodes are %v; want 4", got)
	}

	m.client.Disconnect() // as a killed kilnd would leave it
	again, err := Attach(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.client.Disconnect() })
	if err := again.DetachDisk(ctx, "vdb"); err != nil {
		t.Fatalf("detach after a restart: %v\n%s", err, kilntest.Evidence(dir))
	}
	if got := nodesOf(t, ctx, again, "vdb"); len(got) != 0 {
		t.Errorf("after detach, QEMU still has vdb's nodes %v", got)
	}
	if got := nodesOf(t, ctx, again, "vda"); len(got) != 4 {
		t.Errorf("after detaching vdb, vda's nodes are %v; want 4", got)
	}
	out, err := again.run(ctx, "query-fdsets", nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), `"vdb-`) {
		t.Errorf("after detach, QEMU still holds fd sets of vdb: %s", out)
	}
	if err := again.Stop(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

// nodesOf is the names of QEMU's block nodes of the disk.
func nodesOf(t *testing.T, ctx context.Context, m *Machine, disk string) []string {
	t.Helper()
	out, err := m.run(ctx, "query-named-block-nodes", map[string]any{"flat": true})
	if err != nil {
		t.Fatal(err)
	}
	var reply struct {
		Return []struct {
			NodeName string `json:"node-name"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &reply); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range reply.Return {
		if strings.HasPrefix(n.NodeName, disk+"-") {
			names = append(names, n.NodeName)
		}
	}
	return names
}
