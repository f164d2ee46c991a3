package settings

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

// TestConsoleLimitSetting: consoleLimitMiB is 8 MiB unless set; 1 to 1024 are taken,
// anything else refuses the file.
func TestConsoleLimitSetting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kilnd.json")
	for _, tc := range []struct {
		file string
		want int64 // 0: refused
	}{
		{`{}`, 8 << 20},
		{`{"consoleLimitMiB": 0}`, 8 << 20},
		{`{"consoleLimitMiB": 1}`, 1 << 20},
		{`{"consoleLimitMiB": 1024}`, 1 << 30},
		{`{"consoleLimitMiB": -1}`, 0},
		{`{"consoleLimitMiB": 1025}`, 0},
		{`{"consoleLimitMiB": "8"}`, 0},
	} {
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := Load(context.Background(), path, false)
		switch {
		case tc.want == 0 && !errdefs.IsInvalidArgument(err):
			t.Errorf("%s: %v, want an invalid argument", tc.file, err)
		case tc.want != 0 && err != nil:
			t.Errorf("%s: %v", tc.file, err)
		case tc.want != 0 && st.ConsoleLimit() != tc.want:
			t.Errorf("%s: limit %d, want %d", tc.file, st.ConsoleLimit(), tc.want)
		}
	}
}
