//go:build race

package kilntest

// Race says the tests run under the race detector: Build then builds the commands with
// -race too.
const Race = true
