// Package oci moves images between a kiln store and an OCI registry (oras-go's
// registry client over the distribution API):
//
//   - Push sends an image's manifest, config and layers as they are stored (the same
//     digests: a layer's digest names its whole chain in every store and registry), and
//     only the blobs the registry lacks;
//   - Pull fetches a kiln image's manifest, config and layers, and trusts none of it:
//     the manifest and config are bounded and checked field by field, every blob is
//     verified against its digest and size while it streams into the content store
//     (nothing past the declared size is read), sizes and counts are bounded (manifest
//     bytes, layers, each blob, their sum against the free space and the caller's
//     quota), and each layer goes through the checks a registered disk gets
//     (Puller.Check, which kilnd gives as volumes.Tool.CheckLayer: the header parsed in
//     Go, no external data file, a backing file only the bare digest of a layer below it
//     in the same image), before it is committed. The image's record and its snapshots
//     are made only when all of it is stored and checked, so a failed pull leaves no
//     record and no ingest; blobs already committed and checked stay unreferenced until
//     GC, as any blob no record reaches.
//
// The registry's address, credential and extra CA certificates come with each call
// (Remote); the package keeps none of them and logs no credential.
//
// oci imports images, internal/ids, oras-go, containerd's errdefs and log, and the OCI
// specs; it must not import volumes (the layer check is passed in), builder, hypervisor,
// systemd or daemon.
package oci
