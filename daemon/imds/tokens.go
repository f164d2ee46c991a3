package imds

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// sweepEvery is how often minting a token also drops every instance's expired ones
// (an instance that stopped asking keeps its own until then).
const sweepEvery = time.Minute

// token is an IMDSv2 session: good for the uid and the instance it was made for, until
// it expires.
type token struct {
	value    string
	instance string
	expires  time.Time
}

// tokens are the live tokens, by uid, at most MaxTokens each. Its methods are safe for
// concurrent use.
type tokens struct {
	mu        sync.Mutex
	byUID     map[uint32][]token
	nextSweep time.Time
}

// mint makes a token of ttl for uid's instance, dropping expired ones and, past
// MaxTokens, the one nearest its end.
func (t *tokens) mint(uid uint32, instance string, now time.Time, ttl time.Duration) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	value := base64.RawURLEncoding.EncodeToString(b[:])

	t.mu.Lock()
	defer t.mu.Unlock()
	if !now.Before(t.nextSweep) {
		for u, list := range t.byUID {
			if list = live(list, now); len(list) == 0 {
				delete(t.byUID, u)
			} else {
				t.byUID[u] = list
			}
		}
		t.nextSweep = now.Add(sweepEvery)
	}
	list := live(t.byUID[uid], now)
	if len(list) >= MaxTokens {
		first := 0
		for i, tok := range list {
			if tok.expires.Before(list[first].expires) {
				first = i
			}
		}
		list = append(list[:first], list[first+1:]...)
	}
	t.byUID[uid] = append(list, token{value: value, instance: instance, expires: now.Add(ttl)})
	return value
}

// valid reports whether value is a live token of uid's, made for instance.
func (t *tokens) valid(uid uint32, instance, value string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	found := false
	for _, tok := range t.byUID[uid] {
		if subtle.ConstantTimeCompare([]byte(tok.value), []byte(value)) == 1 {
			found = tok.instance == instance && now.Before(tok.expires)
		}
	}
	return found
}

// count is how many tokens uid holds, live or not yet swept.
func (t *tokens) count(uid uint32) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byUID[uid])
}

// live keeps the tokens of list that have not expired at now, in place.
func live(list []token, now time.Time) []token {
	out := list[:0]
	for _, tok := range list {
		if now.Before(tok.expires) {
			out = append(out, tok)
		}
	}
	return out
}
