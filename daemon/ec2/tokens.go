package ec2

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sync"
	"time"

	"kiln/daemon/record"
)

// tokenLife is how long a client token is remembered (the cloud: at least a day).
// Older ones are removed at most every tokenPruning (a read ignores them meanwhile): the
// SDKs send a token with every RunInstances, and a launch need not read them all.
const (
	tokenLife    = 48 * time.Hour
	tokenPruning = time.Hour
)

// tokens make RunInstances, CreateImage and CopyImage idempotent: a request with a
// ClientToken the caller used before (for the same action) answers what the first made
// instead of making more; with other parameters it is IdempotentParameterMismatch.
// Requests with the same token wait for each other.
type tokens struct {
	db     *record.DB
	now    func() time.Time
	mu     sync.Mutex
	in     map[string]*tokenLock // a lock per token in use, while it is
	pruned time.Time             // when old tokens were last removed
}

// tokenLock is a token's lock and how many requests hold or wait for it.
type tokenLock struct {
	sync.Mutex
	users int
}

func newTokens(db *record.DB, now func() time.Time) *tokens {
	return &tokens{db: db, now: now, in: map[string]*tokenLock{}}
}

// once runs make unless the caller's token already made something; it returns the ids
// made (now or before). Without a token it just runs make.
func (t *tokens) once(c *call, make func() ([]string, *Error)) ([]string, *Error) {
	token := c.p.get("ClientToken")
	if token == "" {
		return make()
	}
	if len(token) > 64 {
		return nil, errorf(codeInvalidParameterValue, "ClientToken is %d characters: at most 64", len(token))
	}
	key := c.caller.User + "\x00" + c.action + "\x00" + token
	t.mu.Lock()
	l := t.in[key]
	if l == nil {
		l = &tokenLock{}
		t.in[key] = l
	}
	l.users++
	t.mu.Unlock()
	l.Lock()
	defer func() {
		l.Unlock()
		t.mu.Lock()
		if l.users--; l.users == 0 {
			delete(t.in, key)
		}
		t.mu.Unlock()
	}()
	digest := paramsDigest(c.p)
	prev, ok, err := t.db.ClientToken(key)
	if err != nil {
		return nil, errorf(codeInternalError, "client token: %v", err)
	}
	if ok && t.now().Sub(prev.Time) < tokenLife {
		if prev.Params != digest {
			return nil, errorf(codeIdempotentMismatch, "The client token %s was used before with other parameters", clip(token))
		}
		return prev.IDs, nil
	}
	// What was made is recorded even when a later step failed (a launch whose volumes
	// could not be tagged): a retry answers it instead of making more.
	made, e := make()
	if len(made) == 0 {
		return made, e
	}
	now := t.now()
	var before time.Time // zero: remove none this time
	t.mu.Lock()
	if now.Sub(t.pruned) >= tokenPruning {
		before, t.pruned = now.Add(-tokenLife), now
	}
	t.mu.Unlock()
	if err := t.db.PutClientToken(record.ClientToken{Key: key, Params: digest, IDs: made, Time: now}, before); err != nil && e == nil {
		e = errorf(codeInternalError, "client token: %v", err)
	}
	return made, e
}

// paramsDigest identifies a request's parameters but its token and DryRun.
func paramsDigest(p params) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		if k != "ClientToken" && k != "DryRun" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k + "\x00" + p[k] + "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}
