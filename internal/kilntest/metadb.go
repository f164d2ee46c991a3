package kilntest

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MetaDB opens the metadata DB under root as kilnd does (meta.db, a lock bounded by a
// second), closed when the test ends unless closed before.
func MetaDB(t testing.TB, root string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
