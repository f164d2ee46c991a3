package daemon_test

import (
	"testing"

	"kiln/builder"
	"kiln/daemon/api"
	"kiln/images/oci"
)

// TestLimitsAgree: a limit kept in two packages that may not import each other has the
// same value in both.
func TestLimitsAgree(t *testing.T) {
	if builder.MaxUserData != api.MaxUserData {
		t.Errorf("user data: builder allows %d bytes, the API %d", builder.MaxUserData, api.MaxUserData)
	}
	// A pulled image is held to what register and capture make.
	if oci.MaxVolumeGiB != api.MaxVolumeGiB {
		t.Errorf("volume size: a pull allows %d GiB, the API %d", oci.MaxVolumeGiB, api.MaxVolumeGiB)
	}
	if oci.MaxCmdlineLen != builder.MaxCmdlineLen {
		t.Errorf("kernel command line: a pull allows %d bytes, register %d", oci.MaxCmdlineLen, builder.MaxCmdlineLen)
	}
	if want := oci.MaxDevices*(builder.MaxChain+1) + 2; oci.MaxLayers < want {
		t.Errorf("a pull takes %d layers; an image kiln makes may have %d", oci.MaxLayers, want)
	}
}
