package vols

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"kiln/builder"
	"kiln/daemon/record"
	"kiln/hypervisor"
)

// DropCaptured removes the frozen files that live captures put in the store, now that
// no QEMU has them open: the store's layers stand in for them. No machine of the
// instance runs, and the caller holds the instance (no other operation runs on it).
func (s *Set) DropCaptured(instance string) {
	var changed []*record.Volume
	for _, v := range s.Select(func(v *record.Volume) bool { return v.InstanceID == instance && len(v.Frozen) > 0 }) {
		c := *v
		c.Frozen = nil
		for _, f := range v.Frozen {
			if f.Layer == "" {
				c.Frozen = append(c.Frozen, f)
			}
		}
		if len(c.Frozen) != len(v.Frozen) {
			changed = append(changed, &c)
		}
	}
	for _, v := range changed {
		if err := s.renameBacking(v); err != nil {
			log.L.WithError(err).WithField("volume", v.ID).Warn("keep frozen files")
			continue
		}
		if err := s.Put(v); err != nil {
			log.L.WithError(err).WithField("volume", v.ID).Warn("keep frozen files")
		}
	}
	for _, v := range changed {
		entries, _ := os.ReadDir(s.layout.VolumeDir(v))
		keep := map[string]bool{}
		for _, f := range v.Frozen {
			keep[f.Name] = true
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), v.ID+".frozen-") && !keep[e.Name()] {
				os.Remove(filepath.Join(s.layout.VolumeDir(v), e.Name()))
			}
		}
	}
}

// renameBacking makes each file of the volume that names a frozen file about to go (one
// whose layer stands in for it: not in v.Frozen any more) name that layer instead, so
// that every header names the file below it in the chain (volumes.OpenChain).
func (s *Set) renameBacking(v *record.Volume) error {
	old := s.Get(v.ID)
	if old == nil {
		return nil
	}
	files := append(append([]record.Frozen(nil), old.Frozen...), record.Frozen{Name: filepath.Base(s.layout.VolumePath(v))})
	for i := 1; i < len(files); i++ {
		below, above := files[i-1], files[i]
		if below.Layer == "" || above.Layer != "" {
			continue // the file below stays, or the one above is a layer already
		}
		path := filepath.Join(s.layout.VolumeDir(v), above.Name)
		if err := s.tool.Rename(context.Background(), path, s.store.BlobPath(below.Layer)); err != nil {
			return err
		}
	}
	return nil
}

// MarkCaptured records that the frozen files of each volume a capture took (all its
// files after a live capture; all but the top, which goes on changing, otherwise) are in
// the store as the layers made of them: their entries get their layer, and the volume's
// chain grows by it.
func (s *Set) MarkCaptured(vols []*record.Volume, capVols []builder.CaptureVolume, captured []builder.Captured, live bool) {
	for i, v := range vols {
		files := capVols[i].Files
		count := len(files) - 1
		if live {
			count = len(files)
		}
		if i >= len(captured) || count == 0 && !captured[i].Flattened {
			continue
		}
		c := s.Get(v.ID)
		if c == nil {
			continue
		}
		if captured[i].Flattened { // one layer holds the whole disk: the chain starts anew on it
			c.Chain = captured[i].Layers
		}
		for j := 0; j < count; j++ {
			name := filepath.Base(files[j])
			for k := range c.Frozen {
				if c.Frozen[k].Name != name || c.Frozen[k].Layer != "" {
					continue
				}
				if captured[i].Flattened {
					c.Frozen[k].Layer = captured[i].Layers[0]
				} else {
					c.Frozen[k].Layer = captured[i].Layers[j]
					c.Chain = append(c.Chain, captured[i].Layers[j])
				}
			}
		}
		if captured[i].Flattened && count == 0 {
			if err := s.Put(c); err != nil {
				log.L.WithError(err).WithField("volume", c.ID).Warn("record the flattened layer")
			}
			continue
		}
		if err := s.Put(c); err != nil {
			log.L.WithError(err).WithField("volume", c.ID).Warn("record captured layers; the frozen files stay in the chain")
		}
	}
}

// FreePort is a hot-plug port no attached volume of the instance uses.
func (s *Set) FreePort(instance string) (string, error) {
	taken := map[string]bool{}
	for _, v := range s.Select(func(v *record.Volume) bool { return v.InstanceID == instance && v.Port != "" }) {
		taken[v.Port] = true
	}
	for i := 0; i < hypervisor.HotplugPorts; i++ {
		if p := hypervisor.HotplugPort(i); !taken[p] {
			return p, nil
		}
	}
	return "", fmt.Errorf("instance %s has %d volumes attached while running; stop it to attach more: %w", instance, hypervisor.HotplugPorts, errdefs.ErrResourceExhausted)
}
