package volumes

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
)

// ChainFile is one file of a disk's chain: its path, and the other names the header of
// the file above may give it (a frozen file that a layer now stands in for).
type ChainFile struct {
	Path    string
	Aliases []string
}

// OpenChain opens a disk's chain of qcow2 files for a machine, bottom to top (all but
// the top read-only, the top read-write unless readOnly) and checks each header on the
// descriptor it opened, the one QEMU will get: no file keeps its data in an external
// file or is encrypted; the bottom names no backing file; every other one names the file
// below it, as QEMU would resolve the name (relative to the file's directory: a layer
// names its parent by the bare hex digest, its name in the store), or one of its
// aliases. QEMU is given the chain explicitly and ignores these names, but a header that
// breaks the rules was changed behind kiln's back, and such a disk is refused, never
// booted. Errors name the file and wrap errdefs.ErrDataLoss.
func OpenChain(chain []ChainFile, readOnly bool) ([]*os.File, error) {
	var files []*os.File
	fail := func(err error) ([]*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	for i, c := range chain {
		flag := os.O_RDONLY
		if i == len(chain)-1 && !readOnly {
			flag = os.O_RDWR
		}
		f, err := os.OpenFile(c.Path, flag, 0)
		if err != nil {
			return fail(err)
		}
		files = append(files, f)
		var below []string
		if i > 0 {
			below = append([]string{chain[i-1].Path}, chain[i-1].Aliases...)
		}
		if err := checkLink(f, below); err != nil {
			return fail(fmt.Errorf("%s: %w; it is not used (a layer changed on disk: restore the image from a copy, or deregister it): %w",
				c.Path, err, errdefs.ErrDataLoss))
		}
	}
	return files, nil
}

// checkLink checks one file of a chain: a plain qcow2 whose backing name, if any,
// names the file below (by one of the names given; none for the bottom).
func checkLink(f *os.File, below []string) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("not a regular file")
	}
	h, err := ParseQCOW2Header(io.NewSectionReader(f, 0, st.Size()))
	switch {
	case err != nil:
		return fmt.Errorf("header: %v", err)
	case h.HasDataFileFeature || h.DataFileExtension != "":
		return fmt.Errorf("its header names an external data file %q", h.DataFileExtension)
	case h.CryptMethod != 0:
		return fmt.Errorf("its header says it is encrypted")
	case len(below) == 0 && h.BackingFileOffset != 0:
		return fmt.Errorf("it is the bottom of its chain but its header names a backing file %q", h.BackingFileName)
	case len(below) > 0 && h.BackingFileOffset != 0 && !slices.ContainsFunc(below, func(b string) bool {
		return resolve(f.Name(), h.BackingFileName) == filepath.Clean(b)
	}):
		return fmt.Errorf("its header names backing file %q, not the file below it (%s)", h.BackingFileName, filepath.Base(below[0]))
	}
	return nil
}

// resolve is the file a backing name in the header of the file at path stands for, as
// QEMU reads it: relative to the file's directory.
func resolve(path, name string) string {
	if filepath.IsAbs(name) {
		return filepath.Clean(name)
	}
	return filepath.Join(filepath.Dir(path), name)
}
