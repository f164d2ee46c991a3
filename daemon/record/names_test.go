package record

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestCheckName: instance names are their own rule (short names, no spaces or '/'), and
// the error names the instance, not an image.
func TestCheckName(t *testing.T) {
	for _, ok := range []string{"db", "a", "web-1", "my_box.2", strings.Repeat("x", MaxNameLen)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "my box", "a/b", "-x", ".hidden", "tab\there", "ünï", strings.Repeat("x", MaxNameLen+1), "i-0123456789abcdef0"} {
		err := CheckName(bad)
		if !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), "instance name") {
			t.Errorf("%q: %v; want an invalid instance name", bad, err)
		}
	}
}
