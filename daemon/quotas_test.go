package daemon

import (
	"encoding/json"
	"kiln/daemon/api"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestQuotas(t *testing.T) {
	var qs QuotaSettings
	if err := json.Unmarshal([]byte(`{"default": {"vcpus": 4, "memoryMiB": 2048}, "users": {"bob": {"runningInstances": 1, "volumes": 2}, "ci": {"vcpus": 16, "volumeGiB": 64}}}`), &qs); err != nil {
		t.Fatal(err)
	}
	if err := qs.check(); err != nil {
		t.Fatal(err)
	}
	if q := qs.of("alice"); q != (quota{Images: defaultQuota.Images, PublicImages: 5, RunningInstances: 20, VCPUs: 4, MemoryMiB: 2048,
		Volumes: defaultQuota.Volumes, VolumeGiB: defaultQuota.VolumeGiB, StoredMiB: defaultQuota.StoredMiB, ImagesInProgress: 4}) {
		t.Errorf("alice: %+v", q)
	}
	if q := qs.of("bob"); q.RunningInstances != 1 || q.VCPUs != 4 {
		t.Errorf("bob: %+v", q)
	}
	if q := qs.of("bob"); q.Volumes != 2 || q.VolumeGiB != defaultQuota.VolumeGiB {
		t.Errorf("bob's volumes: %+v", q)
	}
	if q := qs.of("ci"); q.VCPUs != 16 || q.MemoryMiB != 2048 || q.VolumeGiB != 64 {
		t.Errorf("ci: %+v", q)
	}
	bad := -1
	if err := (QuotaSettings{Users: map[string]QuotaLimits{"x": {VCPUs: &bad}}}).check(); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a negative limit: %v", err)
	}

	m := &instances{all: map[string]*instance{}}
	add := func(owner, state string, cpus, mem int) {
		id := "i-" + owner + state + strings.Repeat("x", len(m.all))
		m.all[id] = &instance{rec: instanceRecord{ID: id, OwnerID: owner, State: state, CPUs: cpus, MemoryMiB: mem}}
	}
	add("alice", stateRunning, 2, 1024)
	add("alice", stateStopped, 4, 4096)    // stopped: counts for nothing
	add("alice", stateTerminated, 4, 4096) // nor terminated
	add("alice", "", 1, 512)               // reserved, being launched: counts
	add("bob", stateRunning, 4, 2048)      // another user's
	q := qs.of("alice")
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
	if err := m.admitLocked(qs.of("bob"), "bob", 1, 1, 1); err == nil || !strings.Contains(err.Error(), "running instances is 1, 1 in use") {
		t.Errorf("bob's second instance: %v", err)
	}
}

// TestAdmitVolume counts the owner's volumes, standalone or an instance's, and those
// reserved, and gives back a released reservation once.
func TestAdmitVolume(t *testing.T) {
	m := &instances{vols: map[string]*volumeRecord{
		"vol-1": {ID: "vol-1", OwnerID: "alice", SizeGiB: 10, Standalone: true},
		"vol-2": {ID: "vol-2", OwnerID: "alice", SizeGiB: 20, InstanceID: "i-1"}, // an instance's
		"vol-3": {ID: "vol-3", OwnerID: "bob", SizeGiB: 1000},                    // another user's
	}}
	q := quota{Volumes: 4, VolumeGiB: 50}
	release, err := m.admitVolumes(q, "alice", 1, 15)
	if err != nil {
		t.Fatalf("15 GiB of 50 with 30 in use: %v", err)
	}
	if _, err := m.admitVolumes(q, "alice", 1, 6); err == nil || !strings.Contains(err.Error(), "volume size (GiB) is 50, 45 in use, and this needs 6 more") {
		t.Errorf("6 GiB more with 15 reserved: %v", err)
	}
	r2, err := m.admitVolumes(q, "alice", 1, 5)
	if err != nil {
		t.Fatalf("the fourth volume: %v", err)
	}
	if _, err := m.admitVolumes(q, "alice", 1, 0); err == nil || !strings.Contains(err.Error(), "volumes is 4, 4 in use") {
		t.Errorf("a fifth volume: %v", err)
	}
	release()
	release() // twice gives back once
	r2()
	if _, err := m.admitVolumes(q, "alice", 3, 3); err == nil || !strings.Contains(err.Error(), "volumes is 4, 2 in use, and this needs 3 more") {
		t.Errorf("three volumes at once with 2 in use: %v", err)
	}
	if len(m.volsReserved) != 0 {
		t.Errorf("reservations left: %v", m.volsReserved)
	}
	if _, err := m.admitVolumes(q, "alice", 1, 20); err != nil {
		t.Errorf("20 GiB with 30 in use and nothing reserved: %v", err)
	}
}
