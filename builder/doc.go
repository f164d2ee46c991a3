// Package builder makes images in the store, each as a long operation in two steps:
// Prepare checks the request and stores the image's record, pending; Run makes the
// content and leaves the record available, or failed with the reason.
//
//   - Register (Builder.Prepare): disk files a caller opened (each checked through
//     volumes before anything reads its content, then converted into a qcow2 layer with a
//     snapshot record), an optional kernel and initrd (blobs), boot settings and block
//     device mappings.
//   - Create (Builder.PrepareCapture): an instance's volumes captured as new layers on
//     their chains, only what the instance wrote; a chain that would pass MaxChain
//     layers is flattened into one.
//   - Seed volumes (WriteSeed): the cloud-init NoCloud ISO that gives a guest its user
//     data.
//
// Baking images from recipes is not built yet.
//
// builder imports images, volumes, containerd's errdefs and log, the OCI specs and
// go-diskfs (the seed's ISO9660). ARCHITECTURE.md lets it import hypervisor, which it
// does not need today; it must not import daemon or systemd.
package builder
