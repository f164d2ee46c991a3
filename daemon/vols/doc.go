// Package vols is the volumes' records and files: standalone volumes (blank or over a
// snapshot) and those that come with an instance (an overlay over each mapping's
// layers, blank ones asked for), their claims (one attach, detach or delete at a time),
// the volume quotas, and what live captures leave: which frozen files are in the store
// as layers, and dropping those files once no QEMU has them open.
package vols
