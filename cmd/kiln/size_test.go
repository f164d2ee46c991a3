package main

import (
	"strconv"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // -1: refused
	}{
		{"512", 512}, {"1K", 1 << 10}, {"64M", 64 << 20}, {"2G", 2 << 30}, {"1T", 1 << 40}, {"10GiB", 10 << 30},
		{"4gb", 4 << 30}, {" 8G ", 8 << 30}, {"", -1}, {"G", -1}, {"-1G", -1}, {"1.5G", -1}, {"1P", -1},
		{"9999999999T", -1}, {"0x10", -1}, {"-0", -1}, {"+5", -1},
	} {
		got, err := parseSize(tc.in)
		if tc.want < 0 && err == nil || tc.want >= 0 && (err != nil || got != tc.want) {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseSize: any text is a size in range or a usage error; a size printed back
// in bytes parses to itself.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512", "1K", "64M", "2GiB", "1T", "", "-1G", "1.5G", "9999999999T", "8 G", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			if _, ok := err.(usageError); !ok {
				t.Fatalf("parseSize(%q): %v is not a usage error", s, err)
			}
			return
		}
		if n < 0 || n > 1<<62 {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
		if again, err := parseSize(strconv.FormatInt(n, 10)); err != nil || again != n {
			t.Fatalf("%d printed and parsed: %d, %v", n, again, err)
		}
		if strings.ContainsAny(s, ".-+x") {
			t.Fatalf("parseSize accepted %q", s)
		}
	})
}
