package events

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"kiln/daemon/api"
)

var (
	// bucket holds the events, each under its sequence (8 bytes, big-endian): the
	// bucket's own sequence, so the keys run from 1 up with no hole but those pruned
	// from the front.
	bucket = []byte("events")
	// prunedBucket holds the time of the newest event retention pruned (key time).
	prunedBucket = []byte("events-pruned")
)

// Retention bounds the log: at most Max events, none older than MaxAge (0: no bound
// on age). Events past either go, oldest first.
type Retention struct {
	Max    int
	MaxAge time.Duration
}

// Log is the event log. It is safe for concurrent use.
type Log struct {
	db   *bolt.DB
	keep func() Retention

	mu   sync.Mutex
	wake chan struct{} // closed (and replaced) when an append commits
}

// Open opens the log in db's events bucket (making it when missing), converting the
// entries an earlier kilnd wrote there (instance state changes of its own shape) and
// pruning what retention no longer keeps. keep says the retention in force, read at
// each append (the settings change on reload).
func Open(db *bolt.DB, keep func() Retention) (*Log, error) {
	l := &Log{db: db, keep: keep, wake: make(chan struct{})}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(prunedBucket); err != nil {
			return err
		}
		if err := convert(b); err != nil {
			return err
		}
		return l.prune(tx)
	})
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	return l, nil
}

// legacy is an entry of the log kilnd kept before it had readers: an instance's change
// of state, without its owner.
type legacy struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Instance string    `json:"instance"`
	To       string    `json:"to"`
}

// convert rewrites legacy entries as instance events, in place. Their owner is not
// known: only administrators see them.
func convert(b *bolt.Bucket) error {
	type kv struct{ k, v []byte }
	var redo []kv
	err := b.ForEach(func(k, v []byte) error {
		var probe struct {
			DetailType string `json:"detail-type"`
		}
		if json.Unmarshal(v, &probe) == nil && probe.DetailType != "" {
			return nil
		}
		var old legacy
		if err := json.Unmarshal(v, &old); err != nil || old.Type != "instance.state" {
			return nil // not ours to read: kept as it is, skipped by readers
		}
		ev := Instance(old.Instance, "", old.To)
		fill(&ev, binary.BigEndian.Uint64(k), old.Time)
		nv, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		redo = append(redo, kv{append([]byte(nil), k...), nv})
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range redo {
		if err := b.Put(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}

// fill completes an event's envelope: version, id, source, region, time, sequence.
func fill(ev *api.Event, seq uint64, at time.Time) {
	ev.Version, ev.ID, ev.Region, ev.Sequence, ev.Time = "0", newUUID(), region, seq, at.UTC()
	if ev.Source == "" {
		ev.Source = api.EventSource
	}
	if ev.Resources == nil {
		ev.Resources = []string{}
	}
}

// Append records ev (made by Image, Instance, Volume or Snapshot) in tx, the
// transaction that writes the change ev tells of: the event is kept if and only if the
// change is. It gives the event its sequence, id and time, prunes what retention no
// longer keeps, and wakes the readers that follow once tx commits.
func (l *Log) Append(tx *bolt.Tx, ev api.Event) error {
	b := tx.Bucket(bucket)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	fill(&ev, seq, time.Now())
	v, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if err := b.Put(key(seq), v); err != nil {
		return err
	}
	if err := l.prune(tx); err != nil {
		return err
	}
	tx.OnCommit(l.notify)
	return nil
}

func key(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// notify wakes every reader waiting for events.
func (l *Log) notify() {
	l.mu.Lock()
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// waiter is closed at the next append's commit.
func (l *Log) waiter() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wake
}

// prune deletes, oldest first, the events past the retention, and notes the time of
// the newest it deleted.
func (l *Log) prune(tx *bolt.Tx) error {
	r := l.keep()
	b := tx.Bucket(bucket)
	last := b.Sequence()
	cutoff := time.Time{}
	if r.MaxAge > 0 {
		cutoff = time.Now().Add(-r.MaxAge)
	}
	var at time.Time
	pruned := false
	for {
		k, v := b.Cursor().First()
		if k == nil {
			break
		}
		seq := binary.BigEndian.Uint64(k)
		t := timeOf(v)
		if (r.Max <= 0 || last-seq+1 <= uint64(r.Max)) && !t.Before(cutoff) {
			break
		}
		if err := b.Delete(k); err != nil {
			return err
		}
		at, pruned = t, true
	}
	if !pruned {
		return nil
	}
	tb, _ := at.MarshalBinary()
	return tx.Bucket(prunedBucket).Put([]byte("time"), tb)
}

// expired reports whether the oldest event is older than the retention keeps.
func (l *Log) expired() bool {
	r := l.keep()
	if r.MaxAge <= 0 {
		return false
	}
	old := false
	l.db.View(func(tx *bolt.Tx) error {
		if k, v := tx.Bucket(bucket).Cursor().First(); k != nil {
			old = timeOf(v).Before(time.Now().Add(-r.MaxAge))
		}
		return nil
	})
	return old
}

// timeOf is an event's time, read from its JSON (the zero time when it has none).
func timeOf(v []byte) time.Time {
	var t struct {
		Time time.Time `json:"time"`
	}
	json.Unmarshal(v, &t)
	return t.Time
}

// Query is what a reader asks of Stream.
type Query struct {
	// After: the events after this sequence (a reader resuming after the last it saw).
	// When 0, the events from Since on (all that are kept when Since is zero).
	After uint64
	Since time.Time
	// Follow: once the kept events are read, wait for more until ctx ends.
	Follow bool
	// Keep says which events the reader gets (who it is, its filters); nil keeps all.
	Keep func(*api.Event) bool
	// Account is the reader, named by the notices it gets.
	Account string
}

// batch bounds the events read in one transaction: a reader never holds one long.
const batch = 256

// Stream sends the events q asks for to send, oldest first; with q.Follow it then waits
// for more and sends them as they come, until ctx ends (nil) or send fails (its error).
// Events a reader would have read but that retention pruned first (it resumed after
// one pruned, it asked for a time they reached, or, following, it read slower than the
// log was pruned) are not skipped in silence: an EventsLost notice goes in their place.
func (l *Log) Stream(ctx context.Context, q Query, send func(api.Event) error) error {
	if l.expired() {
		if err := l.db.Update(l.prune); err != nil {
			return fmt.Errorf("event log: %w", err)
		}
	}
	cursor, first := q.After, true
	for {
		wake := l.waiter() // before reading: an append after the read wakes us
		pg, err := l.read(cursor)
		if err != nil {
			return err
		}
		oldest, prunedAt := pg.oldest, pg.prunedAt
		var lost *api.EventsLost
		switch {
		case first && q.After == 0:
			// From a time: lost only what was pruned at or after it.
			if !q.Since.IsZero() && !prunedAt.Before(q.Since) {
				lost = &api.EventsLost{After: 0, Resume: oldest, Missed: 0, Since: q.Since,
					Reason: fmt.Sprintf("events since %s up to %s were pruned (the retention of the event log)", q.Since.UTC().Format(time.RFC3339), prunedAt.UTC().Format(time.RFC3339))}
			}
			cursor = oldest - 1
		case oldest > cursor+1:
			lost = &api.EventsLost{After: cursor, Resume: oldest, Missed: oldest - cursor - 1,
				Reason: fmt.Sprintf("%d events after sequence %d were pruned before they were read (the retention of the event log)", oldest-cursor-1, cursor)}
			cursor = oldest - 1
		}
		first = false
		if lost != nil {
			if err := send(notice(*lost, q.Account, time.Now())); err != nil {
				return err
			}
		}
		for i := range pg.events {
			ev := &pg.events[i]
			cursor = ev.Sequence
			if ev.Time.Before(q.Since) || q.Keep != nil && !q.Keep(ev) {
				continue
			}
			if err := send(*ev); err != nil {
				return err
			}
		}
		cursor = max(cursor, pg.scanned)
		if pg.full {
			continue
		}
		if !q.Follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}

// notice is the EventsLost notice for account.
func notice(lost api.EventsLost, account string, now time.Time) api.Event {
	d, _ := json.Marshal(lost)
	ev := api.Event{DetailType: api.DetailTypeLost, Source: api.EventSourceKiln, Account: account, Detail: d}
	fill(&ev, lost.Resume-1, now)
	return ev
}

// page is what one read of the log found.
type page struct {
	events  []api.Event // the events of the entries read
	scanned uint64      // the last entry read
	full    bool        // batch entries were read: there may be more
	oldest  uint64      // the oldest sequence kept (the next to come when none is)
	// prunedAt is the time of the newest event retention pruned.
	prunedAt time.Time
}

// read reads up to batch entries after cursor.
func (l *Log) read(cursor uint64) (page, error) {
	var pg page
	oldest := &pg.oldest
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		c := b.Cursor()
		*oldest = b.Sequence() + 1
		if k, _ := c.First(); k != nil {
			*oldest = binary.BigEndian.Uint64(k)
		}
		if v := tx.Bucket(prunedBucket).Get([]byte("time")); v != nil {
			pg.prunedAt.UnmarshalBinary(v)
		}
		n := 0
		for k, v := c.Seek(key(cursor + 1)); k != nil && n < batch; k, v = c.Next() {
			n++
			pg.scanned = binary.BigEndian.Uint64(k)
			var ev api.Event
			if json.Unmarshal(v, &ev) != nil || ev.DetailType == "" {
				continue // an entry not of this shape (convert left it)
			}
			ev.Sequence = pg.scanned
			pg.events = append(pg.events, ev)
		}
		pg.full = n == batch
		return nil
	})
	if err != nil {
		return page{}, fmt.Errorf("event log: %w", err)
	}
	return pg, nil
}

// newUUID is a random (version 4) UUID, as EventBridge's event ids are.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
