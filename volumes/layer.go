package volumes

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
)

// CopyLayer streams the qcow2 volume at src to w as a layer: the same bytes, but for the
// backing file name in its header, which becomes parent (a parent layer's bare hex
// digest, resolved beside the layer in blobs/sha256), or stays absent for a volume with
// no backing file. It reads src once, so a caller hashing w stores a layer in one pass;
// the cost is the size of what the volume holds (the clusters its instance wrote), never
// the size of the disk. It returns the bytes written.
func CopyLayer(w io.Writer, src, parent string) (int64, error) {
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h, err := ParseQCOW2Header(f)
	if err != nil {
		return 0, fmt.Errorf("volume %s: %w", src, err)
	}
	cluster := int64(1) << h.ClusterBits
	head := make([]byte, cluster)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF {
		return 0, fmt.Errorf("volume %s: %w", src, err)
	}
	head = head[:n]
	switch {
	case h.HasDataFileFeature || h.DataFileExtension != "":
		return 0, fmt.Errorf("volume %s keeps its data in an external file: %w", src, errdefs.ErrInvalidArgument)
	case parent == "" && h.BackingFileOffset != 0:
		return 0, fmt.Errorf("volume %s has a backing file but no parent layer was given: %w", src, errdefs.ErrInvalidArgument)
	case parent != "" && h.BackingFileOffset == 0:
		return 0, fmt.Errorf("volume %s has no backing file to name parent %s: %w", src, parent, errdefs.ErrInvalidArgument)
	case parent != "":
		off, size := int64(h.BackingFileOffset), int64(h.BackingFileSize)
		// The name lives in the first cluster; the new one must fit where the old one was
		// or in the zeros after it, before the cluster ends.
		if off+max(size, int64(len(parent))) > int64(len(head)) {
			return 0, fmt.Errorf("volume %s: backing file name at %d does not fit in the header cluster: %w", src, off, errdefs.ErrInvalidArgument)
		}
		if int64(len(parent)) > size && !bytes.Equal(head[off+size:off+int64(len(parent))], make([]byte, int64(len(parent))-size)) {
			return 0, fmt.Errorf("volume %s: no room for the parent's name in the header: %w", src, errdefs.ErrInvalidArgument)
		}
		clear(head[off : off+size])
		copy(head[off:], parent)
		binary.BigEndian.PutUint32(head[16:], uint32(len(parent)))
	}
	written, err := w.Write(head)
	if err != nil {
		return int64(written), err
	}
	rest, err := io.Copy(w, f)
	return int64(written) + rest, err
}
