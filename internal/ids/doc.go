// Package ids mints and checks the ids of kiln's resources, as the cloud's look: a
// prefix (ami-, snap-, i-, vol-) and 17 lowercase hex digits. It is neutral ground: the
// image store, the builder and the daemon's parts all use it, and it imports nothing
// of kiln's.
package ids
