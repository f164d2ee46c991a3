// Package hypervisor owns QEMU: the accelerator choice, and (with the instances work)
// the command line from a machine spec, the process, QMP and reattaching after a
// daemon restart.
//
// hypervisor imports the standard library and go-qemu; it must not import images,
// volumes, systemd, builder or daemon.
package hypervisor
