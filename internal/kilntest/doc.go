// Package kilntest is the kit the packages' tests share: child processes with a
// deadline (Command), the test guest, failing under CI and skipped elsewhere when it is
// missing (Guest), and the tails of files and logs that a failed wait shows (Tail,
// FileTail, Evidence).
//
// Tests only: no package outside a _test.go file imports it. It imports nothing of
// kiln, so every package's tests may use it without changing ARCHITECTURE.md's rules.
package kilntest
