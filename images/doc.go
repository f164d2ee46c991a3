// Package images owns kiln's store of machine images: the content store (containerd's
// local content store under <root>/content) holding qcow2 layers, kernels, initrds,
// image configs and OCI manifests; the metadata DB (bbolt, <root>/meta.db) holding the
// mutable records of images and snapshots; filters over images; garbage collection.
//
// Content is immutable and named by its sha256 digest. A layer that sits on another
// names its parent by the parent's hex digest as a relative backing file name, so a
// chain resolves inside blobs/sha256/ wherever the store lives.
//
// images imports the standard library, containerd (content store, pkg/gc, errdefs,
// log), bbolt and the OCI specs; it must not import volumes, hypervisor, systemd,
// builder or daemon.
package images
