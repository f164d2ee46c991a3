package hypervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
)

// Overlay is a new top for one disk of a running machine: a qcow2 file (already
// created, its header naming the current top) that writes go to from the snapshot on.
type Overlay struct {
	DiskID string // the disk's id, e.g. "vda"
	Depth  int    // files in the disk's chain now (the current top is node <id>-<Depth-1>)
	File   *os.File // the new top, open read-write; the caller closes it after Snapshot
}

// Snapshot puts each overlay on top of its disk in one QMP transaction (external
// snapshots, blockdev-snapshot): from that instant every disk writes to its new top and
// the files below stop changing, flushed, crash-consistent across all disks together.
// The guest runs on throughout. On failure no disk has changed; the overlay nodes that
// were added are removed again.
func (m *Machine) Snapshot(ctx context.Context, overlays []Overlay) error {
	var added, sets []string
	undo := func() {
		for i := len(added) - 1; i >= 0; i-- {
			m.qmp(ctx, "blockdev-del", map[string]any{"node-name": added[i]})
		}
		m.dropFiles(ctx, sets...)
	}
	var actions []map[string]any
	for _, o := range overlays {
		file, node := fileNode(o.DiskID, o.Depth), formatNode(o.DiskID, o.Depth)
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
			"data": map[string]any{"node": formatNode(o.DiskID, o.Depth-1), "overlay": node}})
	}
	if err := m.qmp(ctx, "transaction", map[string]any{"actions": actions}); err != nil {
		undo()
		return fmt.Errorf("snapshot transaction: %w", err)
	}
	return nil
}

// qmp runs one command with arguments as JSON (blockdev-add is sent this way: go-qemu's
// typed BlockdevAdd is not used).
func (m *Machine) qmp(ctx context.Context, command string, args any) error {
	b, err := json.Marshal(map[string]any{"execute": command, "arguments": args})
	if err != nil {
		return err
	}
	_, err = m.QMP.RunContext(ctx, b)
	return err
}
