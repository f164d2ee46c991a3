package hypervisor

import (
	"context"
	"fmt"
	"os"
)

// Overlay is a new top for one disk of a running machine: a qcow2 file (already
// created, its header naming the current top) that writes go to from the snapshot on.
type Overlay struct {
	DiskID string   // the disk's id, e.g. "vda"
	File   *os.File // the new top, open read-write; the caller closes it after Snapshot
}

// Snapshot puts each overlay on top of its disk in one QMP transaction (external
// snapshots, blockdev-snapshot): from that instant every disk writes to its new top and
// the files below stop changing, flushed, crash-consistent across all disks together.
// The guest runs on throughout. On failure no disk has changed; the overlay nodes that
// were added are removed again. The machine keeps each disk's chain depth: the caller
// names disks by id only.
func (m *Machine) Snapshot(ctx context.Context, overlays []Overlay) error {
	m.blockMu.Lock()
	defer m.blockMu.Unlock()
	depths := make([]int, len(overlays))
	for i, o := range overlays {
		d, err := m.depth(ctx, o.DiskID)
		if err != nil {
			return err
		}
		depths[i] = d
	}
	var added, sets []string
	undo := func() {
		for i := len(added) - 1; i >= 0; i-- {
			m.qmp(ctx, "blockdev-del", map[string]any{"node-name": added[i]})
		}
		m.dropFiles(ctx, sets...)
	}
	var actions []map[string]any
	for i, o := range overlays {
		file, node := fileNode(o.DiskID, depths[i]), formatNode(o.DiskID, depths[i])
		ro, err := reopenReadOnly(o.File)
		if err != nil {
			undo()
			return err
		}
		sets = append(sets, file)
		name, err := m.addFile(ctx, o.File, ro, file)
		ro.Close()
		if err != nil {
			undo()
			return fmt.Errorf("disk %s: %w", o.DiskID, err)
		}
		if err := m.qmp(ctx, "blockdev-add", map[string]any{"driver": "file", "node-name": file, "filename": name}); err != nil {
			undo()
			return fmt.Errorf("disk %s: add %s: %w", o.DiskID, o.File.Name(), err)
		}
		added = append(added, file)
		// No backing yet: the snapshot sets it to the current top.
		if err := m.qmp(ctx, "blockdev-add", map[string]any{"driver": "qcow2", "node-name": node, "file": file, "backing": nil}); err != nil {
			undo()
			return fmt.Errorf("disk %s: add %s: %w", o.DiskID, o.File.Name(), err)
		}
		added = append(added, node)
		actions = append(actions, map[string]any{"type": "blockdev-snapshot",
			"data": map[string]any{"node": formatNode(o.DiskID, depths[i]-1), "overlay": node}})
	}
	if err := m.qmp(ctx, "transaction", map[string]any{"actions": actions}); err != nil {
		undo()
		return fmt.Errorf("snapshot transaction: %w", err)
	}
	for i, o := range overlays {
		m.depths[o.DiskID] = depths[i] + 1
	}
	return nil
}
