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
	h, head, err := readHead(f, src)
	if err != nil {
		return 0, err
	}
	switch {
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

// readHead reads the first cluster of the qcow2 file f and the header parsed from those
// very bytes, refusing a file that names an external data file or is encrypted: what a
// reader of the bytes after them would otherwise open by name.
func readHead(f *os.File, name string) (QCOW2Header, []byte, error) {
	buf := make([]byte, 64<<10)
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF {
		return QCOW2Header{}, nil, fmt.Errorf("volume %s: %w", name, err)
	}
	buf = buf[:n]
	h, err := ParseQCOW2Header(bytes.NewReader(buf))
	if err != nil {
		return h, nil, fmt.Errorf("volume %s: %w", name, err)
	}
	switch {
	case h.HasDataFileFeature || h.DataFileExtension != "":
		return h, nil, fmt.Errorf("volume %s keeps its data in an external file: %w", name, errdefs.ErrInvalidArgument)
	case h.CryptMethod != 0:
		return h, nil, fmt.Errorf("volume %s is encrypted: %w", name, errdefs.ErrInvalidArgument)
	}
	// The header is what the first cluster holds; a cluster is at most 2 MiB.
	cluster := int64(1) << h.ClusterBits
	if cluster > int64(len(buf)) && len(buf) == 64<<10 {
		more := make([]byte, cluster-int64(len(buf)))
		m, err := io.ReadFull(f, more)
		if err != nil && err != io.ErrUnexpectedEOF {
			return h, nil, fmt.Errorf("volume %s: %w", name, err)
		}
		buf = append(buf, more[:m]...)
	}
	if cluster < int64(len(buf)) {
		if _, err := f.Seek(cluster, io.SeekStart); err != nil {
			return h, nil, err
		}
		buf = buf[:cluster]
	}
	return h, buf, nil
}

// CopyChecked copies the qcow2 file at src to w as it is, its header checked in the
// bytes that are copied (readHead): a file another process may be writing (a volume a
// QEMU holds) becomes a copy whose header kiln has read, for a tool that would follow
// the names in it.
func CopyChecked(w io.Writer, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, head, err := readHead(f, src)
	if err != nil {
		return err
	}
	if _, err := w.Write(head); err != nil {
		return err
	}
	_, err = io.Copy(w, f)
	return err
}
