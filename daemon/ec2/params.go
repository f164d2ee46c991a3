package ec2

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// params are a Query API request's parameters: flat names, lists as Name.1, Name.2,
// structures as Name.1.Member.
type params map[string]string

// parseParams reads a request's parameters: a form-encoded body (POST) and the query
// (GET, or a presigned request), without the signature's own.
func parseParams(r *http.Request, body []byte, presigned bool) (params, *Error) {
	p := params{}
	add := func(vs url.Values) *Error {
		for k, v := range vs {
			if presigned && strings.HasPrefix(k, "X-Amz-") {
				continue
			}
			if _, dup := p[k]; len(v) > 1 || dup {
				return errorf(codeInvalidParameter, "the parameter %s is given more than once (in the query and the body, or twice in one)", clip(k))
			}
			p[k] = v[0]
		}
		return nil
	}
	if e := add(r.URL.Query()); e != nil {
		return nil, e
	}
	if len(body) > 0 {
		if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			return nil, errorf(codeInvalidParameterValue, "the body is %s: the Query API takes application/x-www-form-urlencoded", clip(ct))
		}
		vs, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, errorf(codeInvalidParameterValue, "the body is not a form: %v", err)
		}
		if e := add(vs); e != nil {
			return nil, e
		}
	}
	return p, nil
}

func (p params) get(name string) string { return p[name] }

// only refuses parameters the action does not take: kiln never answers a request part
// of which it ignored.
func (p params) only(known []string) *Error {
	for k := range p {
		head, _, _ := strings.Cut(k, ".")
		if head == "Action" || head == "Version" || head == "DryRun" || slices.Contains(known, head) {
			continue
		}
		return errorf(codeUnknownParameter, "The parameter %s is not recognized (kiln's EC2 endpoint does not take it for this action)", clip(k))
	}
	return nil
}

func (p params) required(name string) (string, *Error) {
	v := p[name]
	if v == "" {
		return "", errorf(codeMissingParameter, "The request must contain the parameter %s", name)
	}
	return v, nil
}

func (p params) boolean(name string) (bool, *Error) {
	switch v := p[name]; v {
	case "":
		return false, nil
	case "true", "false":
		return v == "true", nil
	default:
		return false, errorf(codeInvalidParameterValue, "Value (%s) for parameter %s is invalid. Expected: 'true' or 'false'.", clip(v), name)
	}
}

// integer reads an optional integer within [lo, hi]; def when absent.
func (p params) integer(name string, def, lo, hi int) (int, *Error) {
	v, ok := p[name]
	if !ok || v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, errorf(codeInvalidParameterValue, "Value (%s) for parameter %s is invalid. Expected: an integer from %d to %d.", clip(v), name, lo, hi)
	}
	return n, nil
}

// capAt makes an integer over hi hi (EC2 answers a page of its most, not an error).
func (p params) capAt(name string, hi int) {
	if n, err := strconv.Atoi(p[name]); err == nil && n > hi {
		p[name] = strconv.Itoa(hi)
	}
}

// indexed are the entries Name.N(.rest) in the order of N: for each N, the rest of the
// names after "Name.N." (or "" for Name.N itself) with their values.
func (p params) indexed(name string) []params {
	byIndex := map[int]params{}
	for k, v := range p {
		rest, ok := strings.CutPrefix(k, name+".")
		if !ok {
			continue
		}
		num, member, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(num)
		if err != nil {
			continue
		}
		if byIndex[n] == nil {
			byIndex[n] = params{}
		}
		byIndex[n][member] = v
	}
	keys := make([]int, 0, len(byIndex))
	for n := range byIndex {
		keys = append(keys, n)
	}
	sort.Ints(keys)
	out := make([]params, len(keys))
	for i, n := range keys {
		out[i] = byIndex[n]
	}
	return out
}

// values is a list of strings: Name.1, Name.2, ...
func (p params) values(name string) []string {
	var out []string
	for _, e := range p.indexed(name) {
		if v, ok := e[""]; ok {
			out = append(out, v)
		}
	}
	return out
}

// filter is one of a request's Filter.N: a name and the values any of which matches.
type filter struct {
	Name   string
	Values []string
}

// filters reads Filter.N.Name and Filter.N.Value.M.
func (p params) filters() ([]filter, *Error) {
	var out []filter
	for _, e := range p.indexed("Filter") {
		f := filter{Name: e["Name"], Values: e.values("Value")}
		if f.Name == "" {
			return nil, errorf(codeInvalidParameterValue, "a filter has no Name")
		}
		out = append(out, f)
	}
	return out, nil
}

// tags reads Tag.N.Key and Tag.N.Value.
func (p params) tags(name string) (map[string]string, *Error) {
	tags := map[string]string{}
	for _, e := range p.indexed(name) {
		k := e["Key"]
		if k == "" {
			return nil, errorf(codeInvalidParameterValue, "a tag has no Key")
		}
		tags[k] = e["Value"]
	}
	return tags, nil
}

// tagSpecs reads TagSpecification.N (ResourceType, Tag.M) into the tags of each
// resource type, refusing types the action does not make.
func (p params) tagSpecs(types ...string) (map[string]map[string]string, *Error) {
	out := map[string]map[string]string{}
	for _, e := range p.indexed("TagSpecification") {
		rt := e["ResourceType"]
		if !slices.Contains(types, rt) {
			return nil, errorf(codeInvalidParameterValue, "'%s' is not a valid taggable resource type for this operation (want %s)", clip(rt), strings.Join(types, " or "))
		}
		tags, err := e.tags("Tag")
		if err != nil {
			return nil, err
		}
		if out[rt] == nil {
			out[rt] = map[string]string{}
		}
		for k, v := range tags {
			out[rt][k] = v
		}
	}
	return out, nil
}

// page is one page of items (sorted by their ids) after the request's NextToken, at
// most MaxResults (within [lo, hi]) of them; next is the token of the rest.
func page[T any](p params, items []T, id func(T) string, lo, hi int) (out []T, next string, _ *Error) {
	max, e := p.integer("MaxResults", 0, lo, hi)
	if e != nil {
		return nil, "", e
	}
	// Sorted in a copy: items may be kiln's API's own answer, handed over in process.
	items = slices.Clone(items)
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(id(a), id(b)) })
	if tok := p.get("NextToken"); tok != "" {
		after, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(after) == 0 {
			return nil, "", errorf(codeInvalidPaginationToken, "the NextToken %q is not one kiln gave", clip(tok))
		}
		i, _ := slices.BinarySearchFunc(items, string(after), func(t T, s string) int { return strings.Compare(id(t), s) })
		for i < len(items) && id(items[i]) <= string(after) {
			i++
		}
		items = items[i:]
	}
	if max == 0 || len(items) <= max {
		return items, "", nil
	}
	return items[:max], base64.RawURLEncoding.EncodeToString([]byte(id(items[max-1]))), nil
}
