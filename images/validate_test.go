package images

import (
	"strings"
	"testing"
)

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewID(ImagePrefix)
		if !IsID(ImagePrefix, id) || seen[id] {
			t.Fatalf("NewID gave %q (valid %v, repeated %v)", id, IsID(ImagePrefix, id), seen[id])
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "ami-", "ami-0123456789abcdef", "ami-0123456789abcdef01", "ami-0123456789ABCDEF0", "snap-0123456789abcdef0", "ami-0123456789abcdeg0"} {
		if IsID(ImagePrefix, bad) || CheckID(ImagePrefix, bad) == nil {
			t.Errorf("IsID(%q) = true", bad)
		}
	}
}

func TestCheckName(t *testing.T) {
	for name, ok := range map[string]bool{
		"web":                    true,
		"debian 12 (2026-11-22)": true,
		"a_b.c-d'e@f[g]":         true,
		"ab":                     false,
		"a/b/c":                  false,
		strings.Repeat("x", 128): true,
		strings.Repeat("x", 129): false,
		"tab\there":              false,
		"ami-0123456789abcdef0":  false,
	} {
		if err := CheckName(name); (err == nil) != ok {
			t.Errorf("CheckName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestCheckTags(t *testing.T) {
	many := map[string]string{}
	for i := range 51 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	for _, tc := range []struct {
		tags map[string]string
		ok   bool
	}{
		{map[string]string{"env": "prod"}, true},
		{map[string]string{"": "x"}, false},
		{map[string]string{"kiln:origin": "x"}, false},
		{map[string]string{strings.Repeat("k", 129): "x"}, false},
		{map[string]string{"k": strings.Repeat("v", 257)}, false},
		{many, false},
	} {
		if err := CheckTags(tc.tags, 0); (err == nil) != tc.ok {
			t.Errorf("CheckTags(%d tags) = %v, want ok=%v", len(tc.tags), err, tc.ok)
		}
	}
}

func TestMergeTags(t *testing.T) {
	have := map[string]string{"a": "1", "b": "2"}
	got, err := MergeTags(have, map[string]string{"b": "3", "c": "4"})
	if err != nil || len(got) != 3 || got["b"] != "3" || got["c"] != "4" || have["b"] != "2" {
		t.Fatalf("MergeTags: %v, %v (input now %v)", got, err, have)
	}
	full := map[string]string{}
	for i := range MaxTags {
		full[strings.Repeat("k", i+1)] = "v"
	}
	if _, err := MergeTags(full, map[string]string{"k": "replaced"}); err != nil {
		t.Errorf("replacing a tag at the limit: %v", err)
	}
	if _, err := MergeTags(full, map[string]string{"new": "x"}); err == nil {
		t.Error("a 51st tag was accepted")
	}
}
