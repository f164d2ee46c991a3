//go:build !race

package kilntest

// Race: see race.go.
const Race = false
