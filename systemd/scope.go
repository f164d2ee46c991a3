package systemd

import (
	"context"
	"fmt"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Slice is the slice kiln's instances run under.
const Slice = "kiln.slice"

// unitStarter is the one go-systemd D-Bus call scopes need.
type unitStarter interface {
	StartTransientUnitContext(ctx context.Context, name, mode string, props []sddbus.Property, ch chan<- string) (int, error)
}

// Scopes puts each instance's QEMU in a transient scope unit, kiln-<id>.scope under
// kiln.slice, with MemoryMax and CPUQuota from its size: its own cgroup, accounted and
// bounded, and left alone when kilnd.service restarts.
type Scopes struct {
	conn unitStarter
}

// ConnectScopes connects to the system bus (user is false) or the user's, and fails
// when systemd is not reachable there.
func ConnectScopes(ctx context.Context, user bool) (*Scopes, error) {
	var conn *sddbus.Conn
	var err error
	if user {
		conn, err = sddbus.NewUserConnectionContext(ctx)
	} else {
		conn, err = sddbus.NewSystemConnectionContext(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("systemd D-Bus: %w", err)
	}
	return &Scopes{conn: conn}, nil
}

// Kind names the mechanism, for kiln info.
func (s *Scopes) Kind() string { return "systemd-scope" }

// ScopeName is the unit of an instance.
func ScopeName(id string) string { return "kiln-" + id + ".scope" }

// ScopeProperties are the properties of an instance's scope. QEMU needs memory beyond
// the guest's (its own code, device state and, under TCG, the translation cache), so
// MemoryMax is the guest's memory and a quarter, plus 256 MiB.
func ScopeProperties(id string, pid, cpus, memoryMiB int) []sddbus.Property {
	max := (uint64(memoryMiB)*5/4 + 256) << 20
	return []sddbus.Property{
		sddbus.PropDescription("kiln instance " + id),
		sddbus.PropSlice(Slice),
		sddbus.PropPids(uint32(pid)),
		{Name: "MemoryMax", Value: godbus.MakeVariant(max)},
		{Name: "CPUQuotaPerSecUSec", Value: godbus.MakeVariant(uint64(cpus) * 1_000_000)},
		{Name: "CollectMode", Value: godbus.MakeVariant("inactive-or-failed")},
	}
}

// Place moves the QEMU process pid of instance id into its scope and waits for
// systemd to say the job is done.
func (s *Scopes) Place(ctx context.Context, id string, pid, cpus, memoryMiB int) error {
	ch := make(chan string, 1)
	name := ScopeName(id)
	if _, err := s.conn.StartTransientUnitContext(ctx, name, "fail", ScopeProperties(id, pid, cpus, memoryMiB), ch); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	select {
	case result := <-ch:
		if result != "done" {
			return fmt.Errorf("start %s: job %s", name, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("start %s: %w", name, ctx.Err())
	}
}
