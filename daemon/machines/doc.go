// Package machines is what an instance's machine is: its size (the built-in instance
// types, or vCPUs and memory checked against the host), the user its QEMU runs as (a
// uid of its own, from a range no account has), and the machine spec QEMU starts from,
// with every file kilnd opens for it (each disk's chain checked as it is opened; kernel
// and initrd as sealed in-memory copies, one per blob, shared by instances): QEMU gets
// descriptors, never names; and its network card: the user-mode network, the SSH port
// each instance keeps (42200 on), the ports it publishes, checked free before QEMU
// starts (naming who holds one that is not).
package machines
