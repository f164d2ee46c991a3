package volumes

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/containerd/errdefs"
)

// CheckLayer checks a qcow2 layer that came from outside (a pulled blob) before it is
// stored, with the checks a registered disk gets: its header parsed in Go first (no
// external data file, not encrypted, not marked corrupt, no unknown incompatible
// feature), then `qemu-img info` and `qemu-img check` under InspectLimits, given only
// the descriptor f. Unlike a registered disk a layer may sit on another, but its
// backing file name must be the bare name of one of parents (the hex digests of the
// layers below it in the same image: a layer names its parent so, resolved beside it in
// the store); qemu-img is told that the layer has no backing (backing: null), so it
// opens nothing the header names. It returns what the layer is and the parent it names
// ("" for a bottom layer). Errors name the layer and wrap errdefs.ErrInvalidArgument.
func (t Tool) CheckLayer(ctx context.Context, f *os.File, name string, parents []string) (Info, string, error) {
	if err := CheckReadable(f); err != nil {
		return Info{}, "", fmt.Errorf("layer %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		return Info{}, "", fmt.Errorf("layer %s: %v: %w", name, err, errdefs.ErrInvalidArgument)
	}
	if !st.Mode().IsRegular() {
		return Info{}, "", fmt.Errorf("layer %s is not a regular file: %w", name, errdefs.ErrInvalidArgument)
	}
	h, err := ParseQCOW2Header(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		return Info{}, "", fmt.Errorf("layer %s: %w", name, err)
	}
	backing := ""
	if h.BackingFileOffset != 0 {
		backing = h.BackingFileName
		switch {
		case backing == "":
			return Info{}, "", fmt.Errorf("layer %s: its backing file name cannot be read: %w", name, errdefs.ErrInvalidArgument)
		case !slices.Contains(parents, backing):
			return Info{}, "", fmt.Errorf("layer %s names backing file %q, which is not a layer below it in the image (a layer may sit only on an earlier layer of its image, named by its bare digest): %w",
				name, backing, errdefs.ErrInvalidArgument)
		}
		h.BackingFileOffset = 0 // checked: Refuse judges the rest
	}
	if err := h.Refuse(); err != nil {
		return Info{}, "", fmt.Errorf("layer %s: %w", name, err)
	}
	spec, err := json.Marshal(map[string]any{
		"driver":  "qcow2",
		"backing": nil,
		"file":    map[string]any{"driver": "file", "filename": sourceArg},
	})
	if err != nil {
		return Info{}, "", err
	}
	src := "json:" + string(spec)
	out, err := t.run(ctx, InspectLimits, []*os.File{f}, "info", "--output=json", src)
	if err != nil {
		return Info{}, "", invalid(name, err)
	}
	info, err := parseInfo(out, sourceArg, name, "qcow2", backing)
	if err != nil {
		return Info{}, "", err
	}
	info.Source = Source{File: f, Name: name, Format: "qcow2"}
	if err := t.runCheck(ctx, f, name, "layer", src); err != nil {
		return Info{}, "", err
	}
	return info, backing, nil
}
