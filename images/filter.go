package images

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"kiln/internal/ids"
)

// filterKeys are the filter names kiln knows, with the cloud's spelling.
var filterKeys = map[string]func(*Image) []string{
	"name":             func(im *Image) []string { return []string{im.Name} },
	"image-id":         func(im *Image) []string { return []string{im.ID} },
	"state":            func(im *Image) []string { return []string{string(im.State)} },
	"architecture":     func(im *Image) []string { return []string{im.Architecture} },
	"owner-id":         func(im *Image) []string { return []string{im.OwnerID} },
	"root-device-type": func(im *Image) []string { return []string{im.RootDeviceType} },
	"root-device-name": func(im *Image) []string { return []string{im.RootDeviceName} },
	"boot-mode":        func(im *Image) []string { return []string{im.BootMode} },
	"is-public":        func(im *Image) []string { return []string{strconv.FormatBool(im.Public)} },
	"description":      func(im *Image) []string { return []string{im.Description} },
	"tag-key": func(im *Image) []string {
		keys := make([]string, 0, len(im.Tags))
		for k := range im.Tags {
			keys = append(keys, k)
		}
		return keys
	},
	"block-device-mapping.snapshot-id": func(im *Image) []string {
		var ids []string
		for _, m := range im.BlockDeviceMappings {
			if m.EBS != nil {
				ids = append(ids, m.EBS.SnapshotID)
			}
		}
		return ids
	},
	"block-device-mapping.device-name": func(im *Image) []string {
		var names []string
		for _, m := range im.BlockDeviceMappings {
			names = append(names, m.DeviceName)
		}
		return names
	},
}

// Filter is a parsed set of image filters. Values given for the same key are ORed;
// different keys are ANDed, as in the cloud. The zero Filter matches everything.
type Filter struct {
	terms map[string][]string // key → patterns; "tag:K" keys hold tag K's value patterns
}

// FilterKeys lists the filter names ParseFilter accepts (besides tag:KEY).
func FilterKeys() []string {
	keys := make([]string, 0, len(filterKeys)+1)
	for k := range filterKeys {
		keys = append(keys, k)
	}
	keys = append(keys, "tag:KEY")
	slices.Sort(keys)
	return keys
}

// ParseFilter parses filters of the form KEY=PATTERN, where a pattern may hold the
// wildcards * (any run of characters) and ? (one character), and \ escapes the next
// character. Errors wrap errdefs.ErrInvalidArgument and say which keys exist.
func ParseFilter(specs []string) (Filter, error) {
	f := Filter{terms: map[string][]string{}}
	for _, spec := range specs {
		key, pattern, ok := strings.Cut(spec, "=")
		if !ok || key == "" {
			return Filter{}, fmt.Errorf("filter %q: want KEY=VALUE: %w", ids.Clip(spec), errdefs.ErrInvalidArgument)
		}
		if _, known := filterKeys[key]; !known {
			tag, isTag := strings.CutPrefix(key, "tag:")
			if !isTag || tag == "" {
				return Filter{}, fmt.Errorf("filter %q: unknown key %q (known: %s): %w",
					ids.Clip(spec), ids.Clip(key), strings.Join(FilterKeys(), ", "), errdefs.ErrInvalidArgument)
			}
		}
		if strings.HasSuffix(pattern, `\`) && !strings.HasSuffix(pattern, `\\`) {
			return Filter{}, fmt.Errorf("filter %q: ends in a lone \\: %w", ids.Clip(spec), errdefs.ErrInvalidArgument)
		}
		f.terms[key] = append(f.terms[key], pattern)
	}
	return f, nil
}

// Match reports whether im passes every term of the filter.
func (f Filter) Match(im *Image) bool {
	for key, patterns := range f.terms {
		var values []string
		if get, ok := filterKeys[key]; ok {
			values = get(im)
		} else if v, ok := im.Tags[strings.TrimPrefix(key, "tag:")]; ok {
			values = []string{v}
		}
		if !anyMatch(patterns, values) {
			return false
		}
	}
	return true
}

// Exact returns the value of key when the filter pins it to one literal value (no
// wildcard), so a caller can use an index instead of a scan.
func (f Filter) Exact(key string) (string, bool) {
	ps := f.terms[key]
	if len(ps) != 1 || strings.ContainsAny(ps[0], `*?\`) {
		return "", false
	}
	return ps[0], true
}

func anyMatch(patterns, values []string) bool {
	for _, p := range patterns {
		for _, v := range values {
			if Glob(p, v) {
				return true
			}
		}
	}
	return false
}

// Glob reports whether s matches pattern: * matches any run of characters (also
// none), ? exactly one character, \ makes the next character literal. Unlike
// path.Match, "/" is an ordinary character. It runs in O(len(pattern)·len(s)).
func Glob(pattern, s string) bool {
	p, str := []rune(pattern), []rune(s)
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(str) {
		if pi < len(p) {
			switch c := p[pi]; {
			case c == '*':
				starP, starS = pi, si
				pi++
				continue
			case c == '?':
				pi++
				si++
				continue
			case c == '\\' && pi+1 < len(p):
				if p[pi+1] == str[si] {
					pi += 2
					si++
					continue
				}
			case c == str[si]:
				pi++
				si++
				continue
			}
		}
		if starP < 0 {
			return false
		}
		// Backtrack: let the last * take one more character.
		starS++
		pi, si = starP+1, starS
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
