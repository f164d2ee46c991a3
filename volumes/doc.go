// Package volumes does the qcow2 work of kiln, on files other packages name:
//
//   - disk files from callers: Inspect checks one in the format the caller gives
//     (qcow2, raw, vmdk, vhdx; never probed) before anything reads its content, through
//     `qemu-img info` and kiln's own parse of the qcow2 header (ParseQCOW2Header);
//     Convert turns it into a self-contained, deterministic qcow2 v3 layer, the same
//     content giving the same bytes;
//   - layers and chains: CopyLayer streams a volume as a layer whose header names its
//     parent by the parent's bare hex digest (in one read pass, at the cost of what the
//     volume holds, never of the disk's size); Flatten writes a whole chain as one file;
//     OpenChain opens a disk's chain for a machine and checks each header on the very
//     descriptor QEMU will get;
//   - overlays: CreateOverlay, CreateOverlayNamed and CreateBlank make the qcow2 volumes
//     instances write to, over a layer or empty; Rename changes the backing file name a
//     header gives;
//   - descriptors: CheckReadable refuses a descriptor that cannot be read (O_PATH,
//     write-only).
//
// It runs qemu-img and qemu-nbd as programs (never QEMU's block layer in-process) with
// memory and time limits, and never lets them probe a format or follow a file name found
// inside a disk file's header. What reads a caller's disk runs as the caller (Tool.As):
// qemu-nbd, given only the caller's descriptor, exports it read-only over NBD on a
// socket kilnd made; what writes the store runs as kilnd (Tool.Convert). No process
// running as a caller holds or owns a file of the store.
//
// volumes imports only the standard library, golang.org/x/sys and
// github.com/containerd/errdefs; it must not import images, hypervisor, systemd, builder
// or daemon.
package volumes
