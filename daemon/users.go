package daemon

import (
	"os/user"
	"strconv"
	"sync"
)

// userNames caches uid → user name lookups from the system's user database.
type userNames struct {
	mu    sync.Mutex
	names map[uint32]string
}

func (u *userNames) name(uid uint32) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if n, ok := u.names[uid]; ok {
		return n
	}
	n := strconv.FormatUint(uint64(uid), 10)
	if usr, err := user.LookupId(n); err == nil && usr.Username != "" {
		n = usr.Username
	}
	if u.names == nil {
		u.names = map[uint32]string{}
	}
	u.names[uid] = n
	return n
}
