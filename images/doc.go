// Package images owns kiln's store of machine images (Store):
//
//   - the content store (containerd's local content store under <root>/content): qcow2
//     layers, kernels, initrds, image configs and OCI manifests, ingested atomically and
//     named by their sha256 digest;
//   - the mutable records of images and snapshots, cached in memory, in their buckets of
//     the metadata DB (bbolt, <root>/meta.db), which the daemon opens and hands to Open
//     (it keeps its own buckets there);
//   - the rules of those records: ids (internal/ids, with the ami- and snap- prefixes),
//     names, descriptions and tags, launch permissions (CanLaunch, Share), filters over
//     images (ParseFilter, on internal/filter), copies over the same content (CopyImage);
//   - garbage collection: blobs no image, snapshot or live volume's chain reaches are
//     deleted (GC).
//
// Content is immutable. A layer that sits on another names its parent by the parent's
// hex digest as a relative backing file name, so a chain resolves inside blobs/sha256/
// wherever the store lives.
//
// images imports the standard library, containerd (content store, pkg/gc, errdefs,
// log), bbolt, the OCI specs, golang.org/x/sys, kiln/internal/ids and
// kiln/internal/filter; it must not import volumes, hypervisor, systemd, builder or daemon.
package images
