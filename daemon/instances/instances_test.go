package instances

import (
	"bytes"
	"testing"

	"github.com/sirupsen/logrus"

	"kiln/daemon/record"
)

// TestLogTransition: a change of state is logged as "instance STATE" with the state it
// left and its reason as fields, and neither field is there empty (an instance's first
// state has nothing before it; most changes have no reason).
func TestLogTransition(t *testing.T) {
	for _, tc := range []struct {
		from, to, reason string
		want             string
	}{
		{"", record.StatePending, "", `level=info msg="instance pending" instance=i-0123456789abcdef0` + "\n"},
		{record.StatePending, record.StateRunning, "", `level=info msg="instance running" from=pending instance=i-0123456789abcdef0` + "\n"},
		{record.StateRunning, record.StateStopped, "the guest powered off", `level=info msg="instance stopped" from=running instance=i-0123456789abcdef0 reason="the guest powered off"` + "\n"},
	} {
		var out bytes.Buffer
		logger := logrus.New()
		logger.SetOutput(&out)
		logger.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
		logTransition(logrus.NewEntry(logger), "i-0123456789abcdef0", tc.from, tc.to, tc.reason)
		if out.String() != tc.want {
			t.Errorf("%q → %q (reason %q) logged\n%s want\n%s", tc.from, tc.to, tc.reason, out.String(), tc.want)
		}
	}
}
