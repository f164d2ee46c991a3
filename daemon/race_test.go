//go:build race

package daemon_test

// raceBuild: the tests run under the race detector, so TestMain builds kilnd and kiln
// with -race too, and the daemon itself is checked, not only the test process.
const raceBuild = true
