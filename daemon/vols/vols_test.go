package vols

import (
	"strings"
	"testing"

	"kiln/daemon/quota"
	"kiln/daemon/record"
)

// TestAdmitVolume counts the owner's volumes, standalone or an instance's, and those
// reserved, and gives back a released reservation once.
func TestAdmitVolume(t *testing.T) {
	q := quota.Quota{Volumes: 4, VolumeGiB: 50}
	m := &Set{quota: func(string) quota.Quota { return q }, all: map[string]*record.Volume{
		"vol-1": {ID: "vol-1", OwnerID: "alice", SizeGiB: 10, Standalone: true},
		"vol-2": {ID: "vol-2", OwnerID: "alice", SizeGiB: 20, InstanceID: "i-1"}, // an instance's
		"vol-3": {ID: "vol-3", OwnerID: "bob", SizeGiB: 1000},                    // another user's
	}}
	release, err := m.Admit("alice", 1, 15)
	if err != nil {
		t.Fatalf("15 GiB of 50 with 30 in use: %v", err)
	}
	if _, err := m.Admit("alice", 1, 6); err == nil || !strings.Contains(err.Error(), "volume size (GiB) is 50, 45 in use, and this needs 6 more") {
		t.Errorf("6 GiB more with 15 reserved: %v", err)
	}
	r2, err := m.Admit("alice", 1, 5)
	if err != nil {
		t.Fatalf("the fourth volume: %v", err)
	}
	if _, err := m.Admit("alice", 1, 0); err == nil || !strings.Contains(err.Error(), "volumes is 4, 4 in use") {
		t.Errorf("a fifth volume: %v", err)
	}
	release()
	release() // twice gives back once
	r2()
	if _, err := m.Admit("alice", 3, 3); err == nil || !strings.Contains(err.Error(), "volumes is 4, 2 in use, and this needs 3 more") {
		t.Errorf("three volumes at once with 2 in use: %v", err)
	}
	if len(m.reservedN) != 0 {
		t.Errorf("reservations left: %v", m.reservedN)
	}
	if _, err := m.Admit("alice", 1, 20); err != nil {
		t.Errorf("20 GiB with 30 in use and nothing reserved: %v", err)
	}
}
