package filter

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"kiln/internal/ids"
)

// Fields are the filter names of one kind of resource T, with the cloud's spelling: each
// key's values of a resource, and the resource's tags, which give tag:KEY (the value of
// tag KEY) and tag-key (the keys) to every kind. A Fields is read-only once made; it is
// safe for concurrent use.
type Fields[T any] struct {
	Keys map[string]func(T) []string
	Tags func(T) map[string]string
}

// Filter is a parsed set of filters over resources of type T. Values given for the
// same key are ORed; different keys are ANDed, as in the cloud. A Filter with no terms
// matches everything.
type Filter[T any] struct {
	fields *Fields[T]
	terms  map[string][]string // key → patterns; "tag:K" keys hold tag K's value patterns
}

// Names lists the filter names Parse accepts: the kind's keys, tag-key and tag:KEY.
func (fs *Fields[T]) Names() []string {
	keys := make([]string, 0, len(fs.Keys)+2)
	for k := range fs.Keys {
		keys = append(keys, k)
	}
	keys = append(keys, "tag-key", "tag:KEY")
	slices.Sort(keys)
	return keys
}

// Parse parses filters of the form KEY=PATTERN, where a pattern may hold the wildcards
// * (any run of characters) and ? (one character), and \ escapes the next character.
// Errors wrap errdefs.ErrInvalidArgument and say which keys exist.
func (fs *Fields[T]) Parse(specs []string) (Filter[T], error) {
	f := Filter[T]{fields: fs, terms: map[string][]string{}}
	for _, spec := range specs {
		key, pattern, ok := strings.Cut(spec, "=")
		if !ok || key == "" {
			return Filter[T]{}, fmt.Errorf("filter %q: want KEY=VALUE: %w", ids.Clip(spec), errdefs.ErrInvalidArgument)
		}
		if _, known := fs.Keys[key]; !known && key != "tag-key" {
			tag, isTag := strings.CutPrefix(key, "tag:")
			if !isTag || tag == "" {
				return Filter[T]{}, fmt.Errorf("filter %q: unknown key %q (known: %s): %w",
					ids.Clip(spec), ids.Clip(key), strings.Join(fs.Names(), ", "), errdefs.ErrInvalidArgument)
			}
		}
		if strings.HasSuffix(pattern, `\`) && !strings.HasSuffix(pattern, `\\`) {
			return Filter[T]{}, fmt.Errorf("filter %q: ends in a lone \\: %w", ids.Clip(spec), errdefs.ErrInvalidArgument)
		}
		f.terms[key] = append(f.terms[key], pattern)
	}
	return f, nil
}

// Match reports whether x passes every term of the filter.
func (f Filter[T]) Match(x T) bool {
	for key, patterns := range f.terms {
		var values []string
		switch get, ok := f.fields.Keys[key]; {
		case ok:
			values = get(x)
		case key == "tag-key":
			for k := range f.fields.Tags(x) {
				values = append(values, k)
			}
		default:
			if v, ok := f.fields.Tags(x)[strings.TrimPrefix(key, "tag:")]; ok {
				values = []string{v}
			}
		}
		if !anyMatch(patterns, values) {
			return false
		}
	}
	return true
}

// Has reports whether the filter has a term for key.
func (f Filter[T]) Has(key string) bool { return len(f.terms[key]) > 0 }

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
