// Package events is kilnd's event log (kiln events, GET /v1/events): every change of
// state of an image, instance, volume or snapshot, recorded in the shapes Amazon
// EventBridge delivers EC2's and EBS's events in (api.Event), in the "events" bucket of
// the metadata DB, each under its sequence number. An event is appended inside the
// transaction that writes the change it tells of (Log.Append), so the log and the
// records never disagree, and it survives a restart as they do. Retention bounds the
// log (how many events, how old: the settings file's "events"); a reader (Log.Stream)
// reads at its own pace from the DB and is told, with an EventsLost notice, of events
// pruned before it read them, never left with a silent gap.
//
// events imports daemon/api (the shapes) and bbolt; the records' owners call it, it
// calls none of them.
package events
