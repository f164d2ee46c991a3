// Package hypervisor owns QEMU:
//
//   - the accelerator (Prober): KVM only when a probe guest proved under it that it runs
//     code, TCG otherwise, or the operator's choice;
//   - the firmware: SeaBIOS, or OVMF (UEFI) with the machine's own variable store and,
//     for Secure Boot, the SMM build; a virtual TPM 2.0 (swtpm, started beside QEMU
//     and ending with it);
//   - the command line built from a machine Spec: virtio-blk disks, direct kernel boot,
//     the serial console (a socket QEMU serves that logs to the console file; DialConsole
//     connects to it), hot-plug ports, QEMU's seccomp sandbox;
//   - the descriptors QEMU starts with: it opens no file by name, so every disk's whole
//     chain, the console, its log, the QMP socket and sealed in-memory copies of the
//     kernel and initrd are passed to it open;
//   - the process: started detached in its own session, as a user of its own, so it
//     outlives kilnd; Attach reattaches to it after a kilnd restart; Stop takes it down;
//   - what kilnd asks of a running machine over QMP (through hypervisor/qmp): the power
//     button and reset, disk hot-plug and unplug, external snapshots for live captures,
//     and the events kilnd acts on (Watch), in kiln's words;
//   - what kilnd asks of the guest itself through its agent (qemu-guest-agent, Agent):
//     whether it answers, running a program, shutting down. The agent's protocol, as
//     QMP's, stays inside this package.
//
// hypervisor imports the standard library, go-qemu's qmp package, golang.org/x/sys,
// containerd's errdefs and hypervisor/qmp; it must not import images, volumes, systemd,
// builder or daemon.
package hypervisor
