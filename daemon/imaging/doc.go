// Package imaging is the image side of the daemon as callers meet it: which images a
// caller sees (its own, shared with it or a group of its, public ones; all for an
// administrator) and may change (its own), finding one by id or name, the API's view of
// an image for its caller (launch permission for its owner, progress while it is made),
// sharing, the image and stored-bytes quotas reserved before the work starts, the
// images being made (their progress, and waits for them), and the builder's request
// made of an API one (the passed files, read with the caller's rights).
package imaging
