// Package kilntest is the kit the packages' tests share, so that no test helper is
// copied between packages:
//
//   - child processes with a deadline (Command, CommandWithin);
//   - what a machine may lack, failing under CI and skipped elsewhere (Missing, Need,
//     Guest);
//   - the test guest (Guest, GuestFiles, GuestCmdline) and the user a test's QEMU runs
//     as (QEMUUser);
//   - waits with a deadline that fail with the evidence: Poll, Console.Wait (the console
//     tail and QEMU's log), GuestDeadline, and the tails they show (Tail, FileTail,
//     Evidence, InstancesEvidence);
//   - a kilnd process harness (Build, Kilnd: start until it serves, stop, kill, restart,
//     each bounded; a data race kilnd reports under -race fails the test), short
//     directories for Unix sockets (ShortDir, PublicDir);
//   - a unixgram listener as journald and the service manager are (Datagrams);
//   - disk files kiln must accept or refuse (Disks), files opened as a caller opens them
//     (Open), descriptors' open flags (OpenFlags), a process's open descriptors
//     (Descriptors), the processes running as a user (ProcessesAs), whether a QEMU runs
//     (QEMUAlive).
//
// Tests only: no package outside a _test.go file imports it. It imports nothing of
// kiln and nothing beyond the standard library, so every package's tests may use it
// without changing ARCHITECTURE.md's rules.
package kilntest
