// Package images owns kiln's store of machine images (Store):
//
//   - the content store (containerd's local content store under <root>/content): qcow2
//     layers, kernels, initrds, image configs and OCI manifests, ingested atomically and
//     named by their sha256 digest;
//   - the metadata DB (bbolt, <root>/meta.db) with the mutable records of images and
//     snapshots, cached in memory; the daemon keeps its own buckets in the same DB
//     (Store.DB);
//   - the rules of those records: ids (NewID, CheckID; the daemon mints instance and
//     volume ids with them too), names, descriptions and tags, launch permissions
//     (CanLaunch, Share), filters over images (ParseFilter), copies over the same
//     content (CopyImage);
//   - garbage collection: blobs no image, snapshot or live volume's chain reaches are
//     deleted (GC).
//
// Content is immutable. A layer that sits on another names its parent by the parent's
// hex digest as a relative backing file name, so a chain resolves inside blobs/sha256/
// wherever the store lives.
//
// images imports the standard library, containerd (content store, pkg/gc, errdefs,
// log), bbolt, the OCI specs and golang.org/x/sys; it must not import volumes,
// hypervisor, systemd, builder or daemon.
package images
