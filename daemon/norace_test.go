//go:build !race

package daemon_test

// raceBuild: see race_test.go.
const raceBuild = false
