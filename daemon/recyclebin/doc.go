// Package recyclebin is users' recycle bin retention rules, as EC2's Recycle Bin has them:
// a rule of an owner's keeps that owner's images (or snapshots) that it matches (all of
// them, or those with one of its tags) for its retention period once they are
// deregistered (deleted); the longest matching retention wins. A rule may be locked: it
// cannot then be deleted until it is unlocked and its unlock delay has passed. The rules
// are kept in their bucket of the metadata DB. What is in the bin is the image store's
// (images.Store.BinImage); this package only says whether and how long.
//
// It imports daemon/api (the wire shape of a rule) and no other part of the daemon.
package recyclebin
