package peer

import (
	"slices"
	"testing"

	"kiln/daemon/settings"
)

// TestLimiterKeepsRoomForRootAndAdmins: ordinary users stop at their own limit and,
// together, at 7/8 of the total; root and the admin group go on to the total itself.
func TestLimiterKeepsRoomForRootAndAdmins(t *testing.T) {
	lim := settings.Limits{ConnectionsPerUser: 4, Connections: 16, FilesPerUser: 8, Files: 32}
	l := NewLimiter(1000, func() (settings.Limits, string) { return lim, "kiln-admin" })
	user := func(uid uint32) Caller { return Caller{UID: uid, User: "u"} }
	root, admin, self := Caller{UID: 0}, Caller{UID: 2000, Groups: []string{"kiln-admin"}}, Caller{UID: 1000}

	admitted := func(c Caller, n int) (k int) {
		for range n {
			if l.admitConn(c) {
				k++
			}
		}
		return k
	}
	if k := admitted(user(1), 10); k != 4 {
		t.Fatalf("user 1 got %d connections; want its limit, 4", k)
	}
	// Users 2 and 3 take the rest of the users' 14 (16 - 16/8).
	if k := admitted(user(2), 4) + admitted(user(3), 4); k != 8 {
		t.Fatalf("users 2 and 3 got %d connections; want 8", k)
	}
	if k := admitted(user(4), 4); k != 2 {
		t.Fatalf("user 4 got %d connections; want the 2 left to users", k)
	}
	if k := admitted(admin, 1) + admitted(self, 1); k != 2 {
		t.Fatalf("the admin and kilnd's user got %d connections of the kept 2; want 2", k)
	}
	if admitted(root, 1) != 0 {
		t.Fatal("root got a connection past the total")
	}
	l.releaseConn(1)
	if admitted(root, 1) != 1 {
		t.Fatal("root got no connection after one was released")
	}
	if l.totalConns != 16 || l.conns[1] != 3 {
		t.Fatalf("counts %d total, %d of user 1; want 16 and 3", l.totalConns, l.conns[1])
	}

	if k := l.reserveFiles(user(1), 32); k != 8 {
		t.Fatalf("user 1 kept %d of 32 descriptors; want its limit, 8", k)
	}
	if k := l.reserveFiles(user(2), 8) + l.reserveFiles(user(3), 8) + l.reserveFiles(user(4), 8); k != 20 {
		t.Fatalf("users 2-4 kept %d descriptors; want the users' 28 less user 1's 8", k)
	}
	if k := l.reserveFiles(root, 8); k != 4 {
		t.Fatalf("root kept %d descriptors; want the 4 kept back", k)
	}
	l.releaseFiles(1, 8)
	if k := l.reserveFiles(user(5), 8); k != 4 {
		t.Fatalf("user 5 kept %d descriptors; want the 4 left below 7/8 of the total", k)
	}
	if k := l.reserveFiles(admin, 8); k != 4 {
		t.Fatalf("the admin kept %d descriptors; want the 4 left of the total", k)
	}
	// Each refused caller is logged once, however often it was refused; a reservation
	// refuses nothing (nothing was passed yet), a receive past the room does.
	l.filesRefused(user(6))
	l.filesRefused(user(6))
	var logged []uint32
	for uid := range l.warned {
		logged = append(logged, uid)
	}
	slices.Sort(logged)
	if want := []uint32{0, 1, 4, 6}; !slices.Equal(logged, want) || l.warned[6].quiet != 1 {
		t.Fatalf("logged offenders %v, user 6's unlogged refusals %d; want %v and 1", logged, l.warned[6].quiet, want)
	}
}
