package settings

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// Limits bound what callers may hold of kilnd, so that no user can exhaust it for
// the others: how long a request may take to arrive, and how many connections and
// passed descriptors each user and all users may hold open. Zero means the default.
type Limits struct {
	// ReadHeaderSeconds bounds the arrival of a request's headers (default 10).
	ReadHeaderSeconds int `json:"readHeaderSeconds,omitempty"`
	// BodySeconds bounds the arrival of a request's body once its headers are in
	// (default 30).
	BodySeconds int `json:"bodySeconds,omitempty"`
	// IdleSeconds is how long an idle keep-alive connection stays open (default 60).
	IdleSeconds int `json:"idleSeconds,omitempty"`
	// ConnectionsPerUser bounds one user's open connections (default 64).
	ConnectionsPerUser int `json:"connectionsPerUser,omitempty"`
	// Connections bounds all users' open connections (default 1024); ordinary users
	// get 7/8 of it, the rest is kept for root and the admin group.
	Connections int `json:"connections,omitempty"`
	// FilesPerUser bounds the descriptors one user may have passed and not yet
	// handed to a finished request (default 128).
	FilesPerUser int `json:"filesPerUser,omitempty"`
	// Files bounds all users' passed descriptors (default 2048), 7/8 of it for
	// ordinary users.
	Files int `json:"files,omitempty"`
}

// defaultLimits: the CLI holds one or two connections and passes a few descriptors, a
// script a few dozen; callers can make kilnd hold about 3,000 descriptors in all, well
// under its open-file limit, with room for the store and the instances.
var defaultLimits = Limits{
	ReadHeaderSeconds: 10, BodySeconds: 30, IdleSeconds: 60,
	ConnectionsPerUser: 64, Connections: 1024, FilesPerUser: 128, Files: 2048,
}

// Resolved returns l with each zero field the default's.
func (l Limits) Resolved() Limits {
	for _, f := range []struct{ v, d *int }{
		{&l.ReadHeaderSeconds, &defaultLimits.ReadHeaderSeconds}, {&l.BodySeconds, &defaultLimits.BodySeconds},
		{&l.IdleSeconds, &defaultLimits.IdleSeconds}, {&l.ConnectionsPerUser, &defaultLimits.ConnectionsPerUser},
		{&l.Connections, &defaultLimits.Connections}, {&l.FilesPerUser, &defaultLimits.FilesPerUser},
		{&l.Files, &defaultLimits.Files},
	} {
		if *f.v == 0 {
			*f.v = *f.d
		}
	}
	return l
}

func (l Limits) check() error {
	for name, v := range map[string]int{
		"readHeaderSeconds": l.ReadHeaderSeconds, "bodySeconds": l.BodySeconds, "idleSeconds": l.IdleSeconds,
		"connectionsPerUser": l.ConnectionsPerUser, "connections": l.Connections, "filesPerUser": l.FilesPerUser, "files": l.Files,
	} {
		if v < 0 {
			return fmt.Errorf("limits.%s is %d: want 0 (the default) or more: %w", name, v, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
