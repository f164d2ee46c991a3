// Package builder makes images: register (from disk files, a kernel and an initrd),
// and later create (from an instance's volumes) and bake (from recipes).
//
// builder imports images and volumes (and later hypervisor); it must not import daemon
// or systemd.
package builder
