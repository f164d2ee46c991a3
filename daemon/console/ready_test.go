package console

import "testing"

// TestReadyMarker: ready is the test guest's line or cloud-init's final one, never
// cloud-init's earlier "running" lines. The cloud-init lines are its default messages
// (cloud-init 23.4 on Ubuntu 22.04, as the serial console shows them).
func TestReadyMarker(t *testing.T) {
	for _, tc := range []struct {
		console string
		ready   bool
	}{
		{"KILN-GUEST boot gen=0\r\nKILN-GUEST ready\r\n", true},
		{"KILN-GUEST boot gen=0\r\n", false},
		{"[    5.1] cloud-init[512]: Cloud-init v. 23.4.4-0ubuntu0~22.04.1 running 'init-local' at Mon, 01 Apr 2024 10:00:00 +0000. Up 5.12 seconds.\n", false},
		{"[    9.8] cloud-init[601]: Cloud-init v. 23.4.4-0ubuntu0~22.04.1 running 'modules:final' at Mon, 01 Apr 2024 10:00:09 +0000. Up 9.80 seconds.\n", false},
		{"[   17.3] cloud-init[601]: Cloud-init v. 23.4.4-0ubuntu0~22.04.1 finished at Mon, 01 Apr 2024 10:00:12 +0000. Datasource DataSourceNoCloud [seed=/dev/vdb][dsmode=net].  Up 17.35 seconds\n", true},
		{"", false},
	} {
		if got := ReadyMarker.MatchString(tc.console); got != tc.ready {
			t.Errorf("ready(%q) = %v, want %v", tc.console, got, tc.ready)
		}
	}
}
