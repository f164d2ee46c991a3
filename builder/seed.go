package builder

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// MaxUserData bounds user data, as the cloud does (16 KiB there; kiln allows more for
// scripts, but a seed is no way to ship a disk). It is the API's limit
// (daemon/api.MaxUserData, which builder may not import): a daemon test keeps them equal.
const MaxUserData = 256 << 10

// WriteSeed writes a cloud-init NoCloud seed at path: an ISO9660 volume labelled
// "cidata" (with Rock Ridge) holding user-data and meta-data. path must not exist.
func WriteSeed(path string, userData, metaData []byte) error {
	if len(userData) > MaxUserData {
		return fmt.Errorf("user data is %d bytes; at most %d: %w", len(userData), MaxUserData, errdefs.ErrInvalidArgument)
	}
	// go-diskfs wants relative paths inside its work dir; work in the seed's directory.
	dir := filepath.Dir(path)
	work, err := os.MkdirTemp(dir, ".seed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	size := int64(len(userData)+len(metaData)) + 1<<20
	d, err := diskfs.Create(path, size, diskfs.SectorSize(2048))
	if err != nil {
		return fmt.Errorf("seed %s: %w", path, err)
	}
	defer d.Close()
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeISO9660, VolumeLabel: "cidata", WorkDir: work})
	if err != nil {
		return fmt.Errorf("seed %s: %w", path, err)
	}
	for name, data := range map[string][]byte{"/user-data": userData, "/meta-data": metaData} {
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("seed %s: %s: %w", path, name, err)
		}
		if _, err := f.Write(data); err != nil {
			return fmt.Errorf("seed %s: %s: %w", path, name, err)
		}
		f.Close()
	}
	iso, ok := fs.(*iso9660.FileSystem)
	if !ok {
		return fmt.Errorf("seed %s: go-diskfs made a %T, not an ISO9660 filesystem", path, fs)
	}
	if err := iso.Finalize(iso9660.FinalizeOptions{RockRidge: true, VolumeIdentifier: "cidata"}); err != nil {
		return fmt.Errorf("seed %s: %w", path, err)
	}
	return nil
}
