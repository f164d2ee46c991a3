// Package console keeps instances' serial consoles: each is a file QEMU appends to,
// kept as a ring of its last part on disk (holes punched in its head), read a chunk at a
// time from the start of the ring on, and scanned for the line by which a guest says it
// is ready (the test guest's, cloud-init's last). The Tracker remembers, per console,
// how far it was read and punched, and trims every console as guests write. It also
// makes the line kilnd writes before each boot (BootLine), finds a console's last lines
// (Reader.Tail), and relays an attached client to a running console (Relay).
//
// console imports nothing of kiln's: it is told where each console is.
package console
