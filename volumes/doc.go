// Package volumes does the qcow2 work of kiln: it inspects and validates disk files
// before anything reads their content, and converts them into qcow2 layers.
//
// It runs qemu-img and qemu-nbd as programs (never QEMU's block layer in-process) with
// memory and time limits, and never lets them probe a format or follow a file name found
// inside a disk file's header. What reads a caller's disk runs as the caller; what
// writes the store runs as kilnd (Tool.Convert).
//
// volumes imports only the standard library and github.com/containerd/errdefs; it must
// not import images, hypervisor, systemd, builder or daemon.
package volumes
