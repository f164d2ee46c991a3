package images

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/containerd/errdefs"

	"kiln/internal/ids"
)

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := ids.NewID(ImagePrefix)
		if !ids.IsID(ImagePrefix, id) || seen[id] {
			t.Fatalf("NewID gave %q (valid %v, repeated %v)", id, ids.IsID(ImagePrefix, id), seen[id])
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "ami-", "ami-0123456789abcdef", "ami-0123456789abcdef01", "ami-0123456789ABCDEF0", "snap-0123456789abcdef0", "ami-0123456789abcdeg0"} {
		if ids.IsID(ImagePrefix, bad) || ids.CheckID(ImagePrefix, bad) == nil {
			t.Errorf("ids.IsID(%q) = true", bad)
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

// FuzzValidators: the name, description and tag checks never panic, refuse with
// InvalidArgument, and accept only what their limits allow.
func FuzzValidators(f *testing.F) {
	for _, s := range [][4]string{
		{"web-server (v1.2)", "a description", "env", "prod"},
		{"a/b", "bell\a", "kiln:owner", "x"},
		{"ab", strings.Repeat("d", 256), strings.Repeat("k", 129), strings.Repeat("v", 257)},
		{"ami-0123456789abcdef0", "", "", ""},
		{"\xff\xfe", "\xff", "KILN:x", "\xff"},
		{"日本語の名前", "ünïcödé", "ключ", "значение"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, name, desc, key, value string) {
		check := func(what string, err error) bool {
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Fatalf("%s: %v is not InvalidArgument", what, err)
			}
			return err == nil
		}
		if check("name", CheckName(name)) {
			n := utf8.RuneCountInString(name)
			if n < MinNameLen || n > MaxNameLen || strings.Contains(name, "/") || !utf8.ValidString(name) || ids.IsID(ImagePrefix, name) {
				t.Fatalf("CheckName accepted %q", name)
			}
		}
		if check("description", CheckDescription(desc)) {
			if !utf8.ValidString(desc) || utf8.RuneCountInString(desc) > MaxDescriptionLen || strings.ContainsAny(desc, "\x00\n\r\a") {
				t.Fatalf("CheckDescription accepted %q", desc)
			}
		}
		tags := map[string]string{key: value}
		if check("tags", CheckTags(tags, 0)) {
			if key == "" || utf8.RuneCountInString(key) > MaxTagKeyLen || utf8.RuneCountInString(value) > MaxTagValueLen ||
				strings.HasPrefix(strings.ToLower(key), ReservedTagPrefix) || !utf8.ValidString(key) || !utf8.ValidString(value) {
				t.Fatalf("CheckTags accepted %q=%q", key, value)
			}
		}
		if check("tags at the limit", CheckTags(tags, MaxTags)) {
			t.Fatal("CheckTags accepted a 51st tag")
		}
	})
}
