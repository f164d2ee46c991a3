package systemd

import (
	"context"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

// Notify sends a state to the service manager (READY=1, STATUS=…, STOPPING=1, …). It
// reports whether anything was sent: false when kilnd does not run under a manager
// that listens (no NOTIFY_SOCKET).
func Notify(state string) (bool, error) {
	return sddaemon.SdNotify(false, state)
}

// Ready tells the manager the service is up, with a status line.
func Ready(status string) { Notify(sddaemon.SdNotifyReady + "\nSTATUS=" + status) }

// Status updates the status line the manager shows.
func Status(status string) { Notify("STATUS=" + status) }

// Stopping tells the manager the service is stopping.
func Stopping() { Notify(sddaemon.SdNotifyStopping) }

// Reloading tells the manager the service reloads its configuration; Ready ends it.
func Reloading() {
	Notify(sddaemon.SdNotifyReloading + "\nMONOTONIC_USEC=" + monotonicUsec())
}

// Watchdog pings the manager's watchdog at half its interval until ctx ends. It
// returns at once when no watchdog is asked for (no WATCHDOG_USEC).
func Watchdog(ctx context.Context) {
	interval, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		Notify(sddaemon.SdNotifyWatchdog)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
