package quota

import (
	"encoding/json"
	"testing"

	"github.com/containerd/errdefs"
)

func TestQuotas(t *testing.T) {
	var qs Settings
	if err := json.Unmarshal([]byte(`{"default": {"vcpus": 4, "memoryMiB": 2048}, "users": {"bob": {"runningInstances": 1, "volumes": 2}, "ci": {"vcpus": 16, "volumeGiB": 64}}}`), &qs); err != nil {
		t.Fatal(err)
	}
	if err := qs.Check(); err != nil {
		t.Fatal(err)
	}
	if q := qs.Of("alice"); q != (Quota{Images: defaultQuota.Images, PublicImages: 5, RunningInstances: 20, VCPUs: 4, MemoryMiB: 2048,
		Volumes: defaultQuota.Volumes, VolumeGiB: defaultQuota.VolumeGiB, StoredMiB: defaultQuota.StoredMiB, ImagesInProgress: 4}) {
		t.Errorf("alice: %+v", q)
	}
	if q := qs.Of("bob"); q.RunningInstances != 1 || q.VCPUs != 4 {
		t.Errorf("bob: %+v", q)
	}
	if q := qs.Of("bob"); q.Volumes != 2 || q.VolumeGiB != defaultQuota.VolumeGiB {
		t.Errorf("bob's volumes: %+v", q)
	}
	if q := qs.Of("ci"); q.VCPUs != 16 || q.MemoryMiB != 2048 || q.VolumeGiB != 64 {
		t.Errorf("ci: %+v", q)
	}
	bad := -1
	if err := (Settings{Users: map[string]Limits{"x": {VCPUs: &bad}}}).Check(); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a negative limit: %v", err)
	}
}
