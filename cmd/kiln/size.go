package main

import (
	"fmt"
	"strconv"
	"strings"
)

// parseSize reads a size with an optional K, M, G or T suffix (powers of 1024; a
// trailing "iB" or "B" is allowed) and returns bytes.
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || strings.TrimLeft(t, "0123456789") != "" || v > (1<<62)/mult {
		return 0, usageError{fmt.Errorf("size %q: want a whole number with an optional K, M, G or T suffix", s)}
	}
	return v * mult, nil
}
