package events

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"

	"kiln/daemon/api"
	"kiln/internal/kilntest"
)

// testLog is a log in a real metadata DB under root, keeping max events.
type testLog struct {
	*Log
	t   *testing.T
	max atomic.Int64
}

func openLog(t *testing.T, db *bolt.DB, max int) *testLog {
	t.Helper()
	tl := &testLog{t: t}
	tl.max.Store(int64(max))
	l, err := Open(db, func() Retention { return Retention{Max: int(tl.max.Load())} })
	if err != nil {
		t.Fatal(err)
	}
	tl.Log = l
	return tl
}

// add appends the instance events of owner's instance id, one per state, each in its
// own transaction.
func (tl *testLog) add(owner, id string, states ...string) {
	tl.t.Helper()
	for _, st := range states {
		if err := tl.db.Update(func(tx *bolt.Tx) error { return tl.Append(tx, Instance(id, owner, st)) }); err != nil {
			tl.t.Fatal(err)
		}
	}
}

// all reads what a non-following reader gets for q.
func (tl *testLog) all(q Query) []api.Event {
	tl.t.Helper()
	var out []api.Event
	if err := tl.Stream(context.Background(), q, func(ev api.Event) error { out = append(out, ev); return nil }); err != nil {
		tl.t.Fatal(err)
	}
	return out
}

// brief is an event as "SEQ:STATE", or "SEQ:lost(AFTER-RESUME/MISSED)" for a notice.
func brief(ev api.Event) string {
	if ev.DetailType == api.DetailTypeLost {
		var d api.EventsLost
		json.Unmarshal(ev.Detail, &d)
		return fmt.Sprintf("%d:lost(%d-%d/%d)", ev.Sequence, d.After, d.Resume, d.Missed)
	}
	_, _, state := ev.Summary()
	return fmt.Sprintf("%d:%s", ev.Sequence, state)
}

func briefs(evs []api.Event) string {
	s := ""
	for i, ev := range evs {
		if i > 0 {
			s += " "
		}
		s += brief(ev)
	}
	return s
}

// TestShapes: an instance event is EventBridge's "EC2 Instance State-change
// Notification" (version 0, a UUID, source aws.ec2, the owner as the account, the
// instance's ARN), an image's "EC2 AMI State Change" with its four fields (the error
// only for failed), and sequences run from 1.
func TestShapes(t *testing.T) {
	tl := openLog(t, kilntest.MetaDB(t, t.TempDir()), 100)
	tl.add("alice", "i-0123456789abcdef0", "pending")
	if err := tl.db.Update(func(tx *bolt.Tx) error {
		return errors.Join(tl.Append(tx, Image("ami-0123456789abcdef0", "alice", "failed", "disk unreadable")),
			tl.Append(tx, Image("ami-0123456789abcdef0", "alice", "deregistered", "ignored")))
	}); err != nil {
		t.Fatal(err)
	}
	evs := tl.all(Query{})
	if len(evs) != 3 {
		t.Fatalf("got %d events, want 3: %s", len(evs), briefs(evs))
	}
	raw, _ := json.Marshal(evs[0])
	var env map[string]any
	json.Unmarshal(raw, &env)
	for k, want := range map[string]any{"version": "0", "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
		"account": "alice", "region": api.DefaultRegion, "sequence": 1.0} {
		if env[k] != want {
			t.Errorf("instance event %s = %v, want %v (%s)", k, env[k], want, raw)
		}
	}
	if id, _ := env["id"].(string); len(id) != 36 || id[14] != '4' {
		t.Errorf("id %q: want a version 4 UUID", id)
	}
	if res := fmt.Sprint(env["resources"]); res != "[arn:aws:ec2:kiln-local-1:alice:instance/i-0123456789abcdef0]" {
		t.Errorf("resources %s", res)
	}
	if d := string(evs[0].Detail); d != `{"instance-id":"i-0123456789abcdef0","state":"pending"}` {
		t.Errorf("instance detail %s", d)
	}
	if d := string(evs[1].Detail); d != `{"RequestId":"","ImageId":"ami-0123456789abcdef0","State":"failed","ErrorMessage":"disk unreadable"}` {
		t.Errorf("failed image detail %s", d)
	}
	if d := string(evs[2].Detail); d != `{"RequestId":"","ImageId":"ami-0123456789abcdef0","State":"deregistered","ErrorMessage":""}` {
		t.Errorf("deregistered image detail %s", d)
	}
	if got := briefs(evs); got != "1:pending 2:failed 3:deregistered" {
		t.Errorf("sequences: %s", got)
	}
}

// TestFollowerFallsBehind: a follower that reads slower than retention prunes is told
// how many events it lost, with their sequences, where they were, then goes on with
// those kept; what it had read before the prune it still gets.
func TestFollowerFallsBehind(t *testing.T) {
	tl := openLog(t, kilntest.MetaDB(t, t.TempDir()), 3)
	tl.add("alice", "i-1", "pending", "running")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan api.Event) // unbuffered: the follower waits on the test
	done := make(chan error, 1)
	go func() {
		done <- tl.Stream(ctx, Query{Follow: true, Account: "alice"}, func(ev api.Event) error {
			select {
			case got <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	next := func() string {
		t.Helper()
		select {
		case ev := <-got:
			return brief(ev)
		case <-time.After(10 * time.Second):
			t.Fatal("the follower sent nothing within 10s")
			return ""
		}
	}
	if e := next(); e != "1:pending" {
		t.Fatalf("first: %s", e)
	}
	// The follower holds event 2 (read with 1) and waits for the test to take it;
	// meanwhile six more come and retention keeps the last three.
	tl.add("alice", "i-1", "stopping", "stopped", "pending", "running", "stopping", "stopped")
	want := []string{"2:running", "5:lost(2-6/3)", "6:running", "7:stopping", "8:stopped"}
	for _, w := range want {
		if e := next(); e != w {
			t.Fatalf("follower got %s, want %s (the whole: %v)", e, w, want)
		}
	}
	// It goes on following.
	tl.add("alice", "i-1", "terminated")
	if e := next(); e != "9:terminated" {
		t.Fatalf("after the loss: %s", e)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Stream: %v", err)
	}
}

// TestResumeAndSince: a reader resuming after a pruned sequence, or asking for a time
// the pruned events reached, gets a notice first; one asking for what is kept gets no
// notice; a reader sees only what Keep lets through (another user's events are not
// its), and no notice counts as an event.
func TestResumeAndSince(t *testing.T) {
	tl := openLog(t, kilntest.MetaDB(t, t.TempDir()), 100)
	start := time.Now()
	tl.add("alice", "i-1", "pending", "running")
	tl.add("bob", "i-2", "pending")
	tl.max.Store(2)
	tl.add("alice", "i-1", "stopping") // prunes 1 and 2
	alice := func(ev *api.Event) bool { return ev.Account == "alice" }
	if got := briefs(tl.all(Query{After: 1, Keep: alice})); got != "2:lost(1-3/1) 4:stopping" {
		t.Errorf("resume after 1: %s", got)
	}
	if got := briefs(tl.all(Query{Since: start, Keep: alice})); got != "2:lost(0-3/0) 4:stopping" {
		t.Errorf("since the start: %s", got)
	}
	if got := briefs(tl.all(Query{After: 3, Keep: alice})); got != "4:stopping" {
		t.Errorf("resume after 3: %s", got)
	}
	if got := briefs(tl.all(Query{Keep: alice})); got != "4:stopping" {
		t.Errorf("all kept: %s", got)
	}
	if got := briefs(tl.all(Query{Since: time.Now().Add(time.Minute)})); got != "" {
		t.Errorf("since a time to come: %s", got)
	}
}

// TestSurvivesReopen: events are in the DB: a log opened again (a kilnd restart) has
// them, under the same sequences, and numbers new ones after them. An entry of the
// shape an earlier kilnd wrote becomes an instance event only administrators see.
func TestSurvivesReopen(t *testing.T) {
	root := t.TempDir()
	db := kilntest.MetaDB(t, root)
	tl := openLog(t, db, 100)
	tl.add("alice", "i-1", "pending", "running")
	legacy := `{"time":"2026-01-02T03:04:05Z","type":"instance.state","instance":"i-9","from":"running","to":"stopped"}`
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		seq, _ := b.NextSequence()
		return b.Put(binary.BigEndian.AppendUint64(nil, seq), []byte(legacy))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = kilntest.MetaDB(t, root)
	tl = openLog(t, db, 100)
	tl.add("alice", "i-1", "stopping")
	evs := tl.all(Query{})
	if got := briefs(evs); got != "1:pending 2:running 3:stopped 4:stopping" {
		t.Fatalf("after reopening: %s", got)
	}
	if evs[2].Account != "" || evs[2].DetailType != api.DetailTypeInstance || !evs[2].Time.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("the legacy entry became %+v", evs[2])
	}
}

// TestParseFilter: names and values as documented; values of one name are
// alternatives, names all apply; unknown names are refused naming the known ones.
func TestParseFilter(t *testing.T) {
	evs := []api.Event{
		Instance("i-1", "alice", "running"),
		Image("ami-1", "alice", "available", ""),
		Volume("vol-1", "alice", VolumeAttached, "i-1", "/dev/vdb"),
		Snapshot("snap-1", "alice", "ami-1", true, time.Now()),
	}
	for _, tc := range []struct {
		filters []string
		want    string // the kinds kept
	}{
		{nil, "instance image volume snapshot"},
		{[]string{"type=image"}, "image"},
		{[]string{"type=image", "type=volume"}, "image volume"},
		{[]string{"state=running"}, "instance"},
		{[]string{"resource=vol-1"}, "volume"},
		{[]string{"resource=snap-1", "state=succeeded"}, "snapshot"},
		{[]string{"type=image", "state=running"}, ""},
		{[]string{"detail-type=EC2 AMI State Change"}, "image"},
	} {
		match, err := ParseFilter(tc.filters)
		if err != nil {
			t.Errorf("%q: %v", tc.filters, err)
			continue
		}
		got := ""
		for i := range evs {
			if match(&evs[i]) {
				kind, _, _ := evs[i].Summary()
				if got != "" {
					got += " "
				}
				got += kind
			}
		}
		if got != tc.want {
			t.Errorf("%q kept %q, want %q", tc.filters, got, tc.want)
		}
	}
	for _, bad := range []string{"color=red", "type", "type=", "type=ami"} {
		if _, err := ParseFilter([]string{bad}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v, want invalid argument", bad, err)
		}
	}
	if _, err := ParseFilter([]string{"color=red"}); err == nil || !strings.Contains(err.Error(), "type, detail-type, resource, state") {
		t.Errorf("unknown name: %v; want the known ones named", err)
	}
}

// FuzzParseFilter: any filter parses or is refused as an invalid argument, never
// panics, and what parses accepts a lost-events notice.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"type=image", "resource=i-1", "state=running", "detail-type=EC2 AMI State Change", "x=y", "=", "type", "type=ami"} {
		f.Add(s)
	}
	notice := api.Event{DetailType: api.DetailTypeLost}
	ev := Volume("vol-1", "alice", VolumeAttached, "i-1", "/dev/vdb")
	f.Fuzz(func(t *testing.T, s string) {
		match, err := ParseFilter([]string{s})
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("%q: %v, not an invalid argument", s, err)
			}
			return
		}
		if !match(&notice) {
			t.Fatalf("%q hides a lost-events notice", s)
		}
		match(&ev)
	})
}
