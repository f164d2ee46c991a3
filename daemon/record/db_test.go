package record

import (
	"testing"

	"github.com/containerd/errdefs"
)

// TestOpenFileRefusesSecondUser: a second kilnd on the same root is told the store is
// in use, at once, instead of waiting for the lock forever.
func TestOpenFileRefusesSecondUser(t *testing.T) {
	root := t.TempDir()
	db, err := OpenFile(root)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := OpenFile(root); !errdefs.IsUnavailable(err) {
		t.Fatalf("second OpenFile: %v, want Unavailable", err)
	}
}
