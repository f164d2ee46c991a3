package instances

import (
	"kiln/daemon/machines"
	"kiln/daemon/quota"
	"kiln/daemon/record"
)

// usage is what a user's instances hold.
type usage struct{ instances, cpus, memoryMiB int }

// admitLocked refuses n more instances of cpus and memory each when they would
// take the owner past a quota. The caller holds m.mu.
func (m *Manager) admitLocked(q quota.Quota, owner string, n, cpus, mem int) error {
	var u usage
	for _, inst := range m.all {
		r := inst.rec
		if r.OwnerID != owner {
			continue
		}
		switch r.State {
		case record.StatePending, record.StateRunning, record.StateStopping, "": // "" is reserved, being launched
			u.instances++
			u.cpus += r.CPUs
			u.memoryMiB += r.MemoryMiB
		}
	}
	switch {
	case u.instances+n > q.RunningInstances:
		return quota.Exceeded(owner, "running instances", q.RunningInstances, u.instances, n)
	case u.cpus+n*cpus > q.VCPUs:
		return quota.Exceeded(owner, "vCPUs", q.VCPUs, u.cpus, n*cpus)
	case u.memoryMiB+n*mem > q.MemoryMiB:
		return quota.Exceeded(owner, "memory (MiB)", q.MemoryMiB, u.memoryMiB, n*mem)
	}
	return nil
}

// portsLocked refuses published ports another instance in use has, and chooses an SSH
// port for an instance that has none (machines.CheckPorts). The caller holds m.mu.
func (m *Manager) portsLocked(r *record.Instance) error {
	var others []record.Instance
	for _, inst := range m.all {
		if inst.rec.ID != r.ID && inst.rec.State != record.StateTerminated {
			others = append(others, inst.rec)
		}
	}
	return machines.CheckPorts(r, others)
}

// slotsLocked are the QEMU users' slots the instances in use hold. The caller holds m.mu.
func (m *Manager) slotsLocked() map[uint32]bool {
	used := map[uint32]bool{}
	for _, inst := range m.all {
		if inst.rec.State != record.StateTerminated {
			used[inst.rec.QEMUSlot] = true
		}
	}
	return used
}
