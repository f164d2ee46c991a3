package volumes

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// CreateOverlay creates a qcow2 volume at path of size bytes over the layer file
// backing (copy-on-write: nothing of the layer is copied, so it costs the same for any
// layer). The header names the layer by a path relative to the volume, so the store can
// move; QEMU is given the whole chain explicitly and never follows the name. size must
// be at least the layer's virtual size.
func (t Tool) CreateOverlay(ctx context.Context, path, backing string, size int64) error {
	rel, err := filepath.Rel(filepath.Dir(path), backing)
	if err != nil {
		return err
	}
	// -u: the size is given, so qemu-img need not open the layer.
	return t.CreateOverlayNamed(ctx, path, rel, size)
}

// CreateBlank creates an empty qcow2 volume of size bytes at path.
func (t Tool) CreateBlank(ctx context.Context, path string, size int64) error {
	_, err := t.run(ctx, InspectLimits, nil, "create", "-q", "-f", "qcow2", "-o", "compat=1.1,cluster_size=65536", path, strconv.FormatInt(size, 10))
	if err != nil {
		return fmt.Errorf("volume %s: %w", path, err)
	}
	return nil
}

// CreateOverlayNamed creates a qcow2 volume at path of size bytes whose header names
// backing (a file name relative to path's directory) as its backing file. Nothing is
// opened but path: used for a live snapshot, where QEMU is given the chain itself.
func (t Tool) CreateOverlayNamed(ctx context.Context, path, backing string, size int64) error {
	_, err := t.run(ctx, InspectLimits, nil, "create", "-q", "-f", "qcow2", "-o", "compat=1.1,cluster_size=65536",
		"-u", "-F", "qcow2", "-b", backing, path, strconv.FormatInt(size, 10))
	if err != nil {
		return fmt.Errorf("volume %s: %w", path, err)
	}
	return nil
}

// Rename makes the header of the qcow2 volume at path name backing (a file; the name is
// written relative to path) as its backing file, and changes nothing else: for when a
// layer in the store takes the place of the file the volume was made over, with the
// same content. The volume's header is read first: qemu-img would open an external data
// file it names, and the volume is a file a QEMU wrote (it runs no more: the caller
// makes sure of that).
func (t Tool) Rename(ctx context.Context, path, backing string) error {
	rel, err := filepath.Rel(filepath.Dir(path), backing)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	_, _, err = readHead(f, path)
	f.Close()
	if err != nil {
		return err
	}
	if _, err := t.run(ctx, InspectLimits, nil, "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", rel, path); err != nil {
		return fmt.Errorf("volume %s: %w", path, err)
	}
	return nil
}
