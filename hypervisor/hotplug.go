package hypervisor

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/containerd/errdefs"
)

// AttachDisk plugs a disk into the running machine at the PCIe root port named port:
// its files handed over QMP (add-fd), its chain as explicit block nodes (as at start),
// then a virtio-blk device. The guest sees a new disk. On failure nothing stays added.
func (m *Machine) AttachDisk(ctx context.Context, d Disk, port string) error {
	m.blockMu.Lock()
	defer m.blockMu.Unlock()
	var sets []string
	var added []string
	undo := func() {
		for i := len(added) - 1; i >= 0; i-- {
			m.qmp(ctx, "blockdev-del", map[string]any{"node-name": added[i]})
		}
		m.dropFiles(ctx, sets...)
	}
	blockdevs, top, err := d.blockdevNodes(func(i int, f, ro *os.File) (string, error) {
		sets = append(sets, fileNode(d.ID, i))
		return m.addFile(ctx, f, ro, fileNode(d.ID, i))
	})
	if err != nil {
		undo()
		return err
	}
	for _, b := range blockdevs {
		if err := m.qmp(ctx, "blockdev-add", b); err != nil {
			undo()
			return fmt.Errorf("disk %s: %w", d.ID, err)
		}
		added = append(added, b["node-name"].(string))
	}
	if err := m.qmp(ctx, "device_add", map[string]any{"driver": "virtio-blk-pci", "bus": port, "drive": top, "id": d.ID}); err != nil {
		undo()
		return fmt.Errorf("disk %s: %w", d.ID, err)
	}
	m.depths[d.ID] = len(d.Files)
	return nil
}

// DetachDisk unplugs the disk with that id from the running machine: the device goes
// (the guest lets go of it; QEMU says DEVICE_DELETED), then its block nodes, top first:
// as many as its chain has now, live snapshots included.
func (m *Machine) DetachDisk(ctx context.Context, id string) error {
	m.blockMu.Lock()
	defer m.blockMu.Unlock()
	depth, err := m.depth(ctx, id)
	if err != nil {
		return err
	}
	// Whatever happens from here, what QEMU holds of the disk is looked up again.
	defer delete(m.depths, id)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the subscription
	events, err := m.client.Events(ctx)
	if err != nil {
		return err
	}
	if err := m.qmp(ctx, "device_del", map[string]any{"id": id}); err != nil {
		return fmt.Errorf("disk %s: %w", id, err)
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
wait:
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return fmt.Errorf("disk %s: QMP closed while the guest let go of it", id)
			}
			if ev.Event == "DEVICE_DELETED" && ev.Data["device"] == id {
				break wait
			}
		case <-timeout.C:
			return fmt.Errorf("disk %s: the guest did not let go of it within 30 s (a guest still booting, or one without PCIe hot-plug, ignores the request): try again once it is up, or stop the instance and detach it then: %w",
				id, errdefs.ErrFailedPrecondition)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var files []string
	for i := depth - 1; i >= 0; i-- {
		for _, node := range []string{formatNode(id, i), fileNode(id, i)} {
			if err := m.qmp(ctx, "blockdev-del", map[string]any{"node-name": node}); err != nil {
				return fmt.Errorf("disk %s: %w", id, err)
			}
		}
		files = append(files, fileNode(id, i))
	}
	if err := m.dropFiles(ctx, files...); err != nil {
		return fmt.Errorf("disk %s: close its files in QEMU: %w", id, err)
	}
	return nil
}
