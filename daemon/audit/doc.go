// Package audit is kilnd's audit trail (<root>/audit.log): one JSON line per request
// that changed something, with its caller, call, the resources it named and made, and
// its result, each line bounded in size. The trail is reopened on SIGHUP for log
// rotation; a failed write is logged, never returned.
package audit
