package volumes

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
)

// qcow2 header fields (docs/interop/qcow2.txt in QEMU's source).
const (
	qcow2Magic         = 0x514649fb // "QFI\xfb"
	qcow2HeaderV2Len   = 72
	qcow2DirtyBit      = 1 << 0
	qcow2CorruptBit    = 1 << 1
	qcow2DataFileBit   = 1 << 2
	qcow2KnownIncompat = 1<<0 | 1<<1 | 1<<2 | 1<<3 | 1<<4 // dirty, corrupt, data file, compression type, extended L2
	qcow2ExtDataFile   = 0x44415441
	qcow2ExtEnd        = 0
)

// QCOW2Header is what kiln reads of a qcow2 header before it lets qemu-img near the file.
type QCOW2Header struct {
	Version            uint32
	BackingFileOffset  uint64
	BackingFileSize    uint32
	ClusterBits        uint32
	Size               uint64
	CryptMethod        uint32 // 0 none, 1 AES (legacy), 2 LUKS
	IncompatibleFeats  uint64
	HeaderLength       uint32
	DataFileExtension  string // name of an external data file, from the header extension
	BackingFileName    string // read when BackingFileSize is sane
	HasDataFileFeature bool
}

// ParseQCOW2Header reads a qcow2 header from r (at most 64 KiB are read). It returns an
// error wrapping errdefs.ErrInvalidArgument when r does not hold a qcow2 header kiln can
// use. It never follows anything the header names.
func ParseQCOW2Header(r io.ReaderAt) (QCOW2Header, error) {
	var h QCOW2Header
	buf := make([]byte, 64<<10)
	n, err := r.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return h, err
	}
	buf = buf[:n]
	if len(buf) < qcow2HeaderV2Len || binary.BigEndian.Uint32(buf) != qcow2Magic {
		return h, fmt.Errorf("not a qcow2 file (no qcow2 magic): %w", errdefs.ErrInvalidArgument)
	}
	be := binary.BigEndian
	h.Version = be.Uint32(buf[4:])
	h.BackingFileOffset = be.Uint64(buf[8:])
	h.BackingFileSize = be.Uint32(buf[16:])
	h.ClusterBits = be.Uint32(buf[20:])
	h.Size = be.Uint64(buf[24:])
	h.CryptMethod = be.Uint32(buf[32:])
	if h.Version != 2 && h.Version != 3 {
		return h, fmt.Errorf("qcow2 version %d is not supported (2 or 3): %w", h.Version, errdefs.ErrInvalidArgument)
	}
	if h.ClusterBits < 9 || h.ClusterBits > 21 {
		return h, fmt.Errorf("qcow2 cluster bits %d out of range: %w", h.ClusterBits, errdefs.ErrInvalidArgument)
	}
	h.HeaderLength = qcow2HeaderV2Len
	if h.Version == 3 {
		if len(buf) < 104 {
			return h, fmt.Errorf("qcow2 v3 header truncated: %w", errdefs.ErrInvalidArgument)
		}
		h.IncompatibleFeats = be.Uint64(buf[72:])
		h.HeaderLength = be.Uint32(buf[100:])
		if h.HeaderLength < 104 || int(h.HeaderLength) > len(buf) {
			return h, fmt.Errorf("qcow2 header length %d out of range: %w", h.HeaderLength, errdefs.ErrInvalidArgument)
		}
	}
	h.HasDataFileFeature = h.IncompatibleFeats&qcow2DataFileBit != 0
	if h.BackingFileOffset != 0 && h.BackingFileSize > 0 && h.BackingFileSize <= 1023 &&
		h.BackingFileOffset+uint64(h.BackingFileSize) <= uint64(len(buf)) {
		h.BackingFileName = string(buf[h.BackingFileOffset : h.BackingFileOffset+uint64(h.BackingFileSize)])
	}
	// Header extensions follow the header, 8-byte aligned, until the end marker.
	off := uint64(h.HeaderLength)
	for off+8 <= uint64(len(buf)) {
		typ, length := be.Uint32(buf[off:]), uint64(be.Uint32(buf[off+4:]))
		if typ == qcow2ExtEnd {
			break
		}
		data := off + 8
		if data+length > uint64(len(buf)) {
			return h, fmt.Errorf("qcow2 header extension %#x runs past the header: %w", typ, errdefs.ErrInvalidArgument)
		}
		if typ == qcow2ExtDataFile {
			h.DataFileExtension = string(bytes.TrimRight(buf[data:data+length], "\x00"))
		}
		off = data + (length+7)&^7
	}
	return h, nil
}

// Refuse says why a disk with this header must not be used as a standalone layer source,
// or nil when it may. The error wraps errdefs.ErrInvalidArgument.
func (h QCOW2Header) Refuse() error {
	switch {
	case h.BackingFileOffset != 0:
		name := h.BackingFileName
		if name == "" {
			name = "(unreadable name)"
		}
		return fmt.Errorf("qcow2 has a backing file %q; flatten it first (qemu-img convert -O qcow2 IN OUT): %w", name, errdefs.ErrInvalidArgument)
	case h.HasDataFileFeature || h.DataFileExtension != "":
		return fmt.Errorf("qcow2 keeps its data in an external file %q; convert it to a self-contained qcow2 first: %w", h.DataFileExtension, errdefs.ErrInvalidArgument)
	case h.CryptMethod != 0:
		// qemu-img would say only "Parameter 'encrypt.key-secret' is required for cipher".
		how := "LUKS"
		if h.CryptMethod == 1 {
			how = "legacy AES"
		}
		return fmt.Errorf("qcow2 is encrypted (%s); kiln keeps disks unencrypted: decrypt it first "+
			"(qemu-img convert --object secret,id=k,file=KEYFILE --image-opts driver=qcow2,file.filename=IN,encrypt.key-secret=k -O qcow2 OUT): %w",
			how, errdefs.ErrInvalidArgument)
	case h.IncompatibleFeats&qcow2CorruptBit != 0:
		return fmt.Errorf("qcow2 is marked corrupt; repair it with qemu-img check -r all: %w", errdefs.ErrInvalidArgument)
	case h.IncompatibleFeats&^qcow2KnownIncompat != 0:
		return fmt.Errorf("qcow2 uses unknown incompatible features %#x: %w", h.IncompatibleFeats&^qcow2KnownIncompat, errdefs.ErrInvalidArgument)
	}
	return nil
}
