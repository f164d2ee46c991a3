package ids

import (
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
)

// minPrefixDigits is how many hex digits an id's prefix needs to name one: fewer would
// match by chance as soon as a few resources exist.
const minPrefixDigits = 4

// Ref is what a reference may name: a resource's id, its name if it has one, and its
// owner.
type Ref struct{ ID, Name, Owner string }

// Pick returns the one of items that ref names for the caller me (see Find); refOf gives
// each item's Ref. Items are those the caller may see, those a name should prefer first.
func Pick[T any](kind, prefix, ref, me string, items []T, refOf func(T) Ref) (T, error) {
	refs := make([]Ref, len(items))
	for i, it := range items {
		refs[i] = refOf(it)
	}
	i, err := Find(kind, prefix, ref, me, refs)
	if err != nil {
		var none T
		return none, err
	}
	return items[i], nil
}

// Find returns the index in refs of the resource that ref names for the caller me: the
// one with that id; else one with that name, the first of the caller's own, else the
// first of another owner's (a name several other owners use is ambiguous); else the one
// whose id ref begins (ByPrefix). A ref naming none is NotFound, with the names close to
// it; a prefix of several ids is Ambiguous.
func Find(kind, prefix, ref, me string, refs []Ref) (int, error) {
	if i := slices.IndexFunc(refs, func(r Ref) bool { return r.ID == ref }); i >= 0 {
		return i, nil
	}
	first, owners := -1, map[string]bool{}
	for i, r := range refs {
		if r.Name == "" || r.Name != ref {
			continue
		}
		if r.Owner == me {
			return i, nil
		}
		if first < 0 {
			first = i
		}
		owners[r.Owner] = true
	}
	switch {
	case len(owners) > 1:
		return -1, fmt.Errorf("%s name %q is used by %d owners; use the %s id: %w", kind, Clip(ref), len(owners), kind, errdefs.ErrInvalidArgument)
	case first >= 0:
		return first, nil
	}
	switch m := ByPrefix(prefix, ref, refs); len(m) {
	case 0:
		return -1, NotFound(kind, ref, refs)
	case 1:
		return slices.IndexFunc(refs, func(r Ref) bool { return r.ID == m[0].ID }), nil
	default:
		return -1, Ambiguous(kind, ref, m)
	}
}

// ByPrefix returns the refs whose id begins with ref, when ref is the start of an id
// of prefix (the prefix and 4 to 16 hex digits), as docker resolves a short id; none
// otherwise. A whole id is not a prefix: the caller looks it up as it is.
func ByPrefix(prefix, ref string, refs []Ref) []Ref {
	digits, ok := strings.CutPrefix(ref, prefix)
	if !ok || len(digits) < minPrefixDigits || len(digits) >= idDigits || strings.Trim(digits, "0123456789abcdef") != "" {
		return nil
	}
	var out []Ref
	for _, r := range refs {
		if strings.HasPrefix(r.ID, ref) {
			out = append(out, r)
		}
	}
	return out
}

// Suggest returns up to three of the names closest to ref, closest first: those a typo
// away (at most two edits, one for a name of four runes or fewer).
func Suggest(ref string, names []string) []string {
	limit := 2
	if len([]rune(ref)) <= 4 {
		limit = 1
	}
	type near struct {
		name string
		d    int
	}
	var found []near
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" || n == ref || seen[n] {
			continue
		}
		seen[n] = true
		if d := distance(ref, n, limit); d <= limit {
			found = append(found, near{n, d})
		}
	}
	slices.SortFunc(found, func(a, b near) int {
		if a.d != b.d {
			return a.d - b.d
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, 0, 3)
	for _, f := range found[:min(3, len(found))] {
		out = append(out, f.name)
	}
	return out
}

// distance is the Damerau-Levenshtein (optimal string alignment) distance between a and
// b, by runes; anything over limit is limit+1, so that long names cost little.
func distance(a, b string, limit int) int {
	ra, rb := []rune(a), []rune(b)
	if d := len(ra) - len(rb); d > limit || -d > limit {
		return limit + 1
	}
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		best := cur[0]
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
			best = min(best, cur[j])
		}
		if best > limit {
			return limit + 1
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(rb)], limit+1)
}

// NotFound is the error for a reference that names none of refs: what kind of resource
// was wanted, and the names and ids close to ref, if any, as a suggestion.
func NotFound(kind, ref string, refs []Ref) error {
	var names []string
	for _, r := range refs {
		names = append(names, r.Name, r.ID)
	}
	msg := fmt.Sprintf("%s %q: no %s has that id or name", kind, Clip(ref), kind)
	if near := Suggest(ref, names); len(near) > 0 {
		msg += fmt.Sprintf(" (did you mean %s?)", QuoteAll(near, " or "))
	}
	return fmt.Errorf("%s: %w", msg, errdefs.ErrNotFound)
}

// Ambiguous is the error for an id prefix that begins several ids.
func Ambiguous(kind, ref string, matches []Ref) error {
	idsOf := make([]string, 0, len(matches))
	for _, m := range matches {
		idsOf = append(idsOf, m.ID)
	}
	slices.Sort(idsOf)
	if len(idsOf) > 4 {
		idsOf = append(idsOf[:4], "…")
	}
	return fmt.Errorf("%s id prefix %q begins %d ids (%s); give more of the id: %w",
		kind, ref, len(matches), strings.Join(idsOf, ", "), errdefs.ErrInvalidArgument)
}

// QuoteAll quotes each string and joins them with sep.
func QuoteAll(ss []string, sep string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, sep)
}
