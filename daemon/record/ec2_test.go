package record

import (
	"testing"
	"time"
)

// TestClientTokenPruning: a token is written with or without a pruning; a pruning
// removes the tokens older than its time and keeps the others.
func TestClientTokenPruning(t *testing.T) {
	bdb, err := OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	db, err := Open(bdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	put := func(key string, at, before time.Time) {
		t.Helper()
		if err := db.PutClientToken(ClientToken{Key: key, Params: "p", IDs: []string{"i-1"}, Time: at}, before); err != nil {
			t.Fatal(err)
		}
	}
	has := func(key string) bool {
		t.Helper()
		_, ok, err := db.ClientToken(key)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	put("old", now.Add(-50*time.Hour), time.Time{})
	put("new", now, time.Time{})
	if !has("old") || !has("new") {
		t.Fatalf("a write without a pruning removed a token")
	}
	put("newer", now, now.Add(-48*time.Hour))
	if has("old") || !has("new") || !has("newer") {
		t.Errorf("after a pruning: old %v, new %v, newer %v; want only old gone", has("old"), has("new"), has("newer"))
	}
}
