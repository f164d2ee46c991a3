package instances

import (
	"encoding/json"
	"strings"
	"testing"

	"kiln/daemon/api"
	"kiln/daemon/quota"
	"kiln/daemon/record"
)

// TestAdmitInstances counts the owner's instances that hold resources (pending, running,
// stopping, or reserved), not stopped, terminated or others' ones.
func TestAdmitInstances(t *testing.T) {
	var qs quota.Settings
	if err := json.Unmarshal([]byte(`{"default": {"vcpus": 4, "memoryMiB": 2048}, "users": {"bob": {"runningInstances": 1}}}`), &qs); err != nil {
		t.Fatal(err)
	}
	m := &Manager{all: map[string]*Instance{}}
	add := func(owner, state string, cpus, mem int) {
		id := "i-" + owner + state + strings.Repeat("x", len(m.all))
		m.all[id] = &Instance{rec: record.Instance{ID: id, OwnerID: owner, State: state, CPUs: cpus, MemoryMiB: mem}}
	}
	add("alice", record.StateRunning, 2, 1024)
	add("alice", record.StateStopped, 4, 4096)    // stopped: counts for nothing
	add("alice", record.StateTerminated, 4, 4096) // nor terminated
	add("alice", "", 1, 512)                      // reserved, being launched: counts
	add("bob", record.StateRunning, 4, 2048)      // another user's
	q := qs.Of("alice")
	for _, tc := range []struct {
		n, cpus, mem int
		says         string // "" admitted
	}{
		{1, 1, 512, ""},
		{1, 2, 256, "vCPUs is 4, 3 in use"},
		{1, 1, 1024, "memory (MiB) is 2048, 1536 in use"},
		{2, 1, 256, "vCPUs is 4, 3 in use, and this needs 2 more"},
	} {
		err := m.admitLocked(q, "alice", tc.n, tc.cpus, tc.mem)
		if tc.says == "" && err != nil || tc.says != "" && (err == nil || !strings.Contains(err.Error(), tc.says) || api.FromError(err, api.KindInstance).Code != api.CodeQuotaExceeded) {
			t.Errorf("admit %d × %d vCPU %d MiB: %v; want %q", tc.n, tc.cpus, tc.mem, err, tc.says)
		}
	}
	if err := m.admitLocked(qs.Of("bob"), "bob", 1, 1, 1); err == nil || !strings.Contains(err.Error(), "running instances is 1, 1 in use") {
		t.Errorf("bob's second instance: %v", err)
	}
}
