// Package record is the daemon's records and where they live: the instance and volume
// records (each change of state appended to the event log, package events, in the
// transaction that writes it), in their buckets of the metadata DB (<root>/meta.db, which
// OpenFile opens for the image store and the daemon both), and the layout of instances'
// and volumes' files under the data root (docs/layout.md). It caches nothing and
// decides nothing: the instance domain keeps the records and changes them.
package record
