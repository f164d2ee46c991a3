package daemon_test

import (
	"testing"

	"kiln/builder"
	"kiln/daemon/api"
)

// TestLimitsAgree: a limit kept in two packages that may not import each other has the
// same value in both.
func TestLimitsAgree(t *testing.T) {
	if builder.MaxUserData != api.MaxUserData {
		t.Errorf("user data: builder allows %d bytes, the API %d", builder.MaxUserData, api.MaxUserData)
	}
}
