package hypervisor

import (
	"context"
	"fmt"

	"github.com/digitalocean/go-qemu/qmp"
)

// EventKind is what happened to a running machine, in kiln's words.
type EventKind int

const (
	// GuestPoweredOff: the guest shut itself down (QEMU then exits).
	GuestPoweredOff EventKind = iota + 1
	// GuestFailed: the guest cannot go on: its kernel panicked, or QEMU stopped it on
	// an internal error of the accelerator (a KVM that cannot run it). Its vCPUs no
	// longer run, but QEMU may stay; the machine should be stopped.
	GuestFailed
	// GuestReset: the guest reset itself (it rebooted) and runs on. A reset asked for
	// by kilnd (Reboot) is not reported.
	GuestReset
)

// Event is one thing that happened to a machine, with a reason for people.
type Event struct {
	Kind   EventKind
	Reason string
}

// Reasons a guest failed.
const (
	ReasonPanicked      = "the guest's kernel panicked (see its console)"
	ReasonInternalError = "QEMU stopped the guest on an internal error of the accelerator (see qemu.log)"
)

// Watch follows the machine from now on and sends what kilnd acts on: a guest that
// powered itself off or reset itself, or one that failed (a panic reported by the
// pvpanic device, a stop on an internal error, and a machine already found in such a
// state; Failed is closed then too, before the event is sent). The channel closes when
// the QMP connection does (QEMU exits) or ctx ends. The receiver must keep reading;
// events it falls behind on are dropped by the QMP client, never blocking it.
func (m *Machine) Watch(ctx context.Context) (<-chan Event, error) {
	events, err := m.client.Events(ctx)
	if err != nil {
		return nil, err
	}
	out := make(chan Event, 4)
	go func() {
		defer close(out)
		failed := false
		send := func(e Event) {
			if e.Kind == GuestFailed {
				if failed {
					return // once: a panic is both an event and a state
				}
				failed = true
				m.markFailed(e.Reason)
			}
			select {
			case out <- e:
			case <-ctx.Done():
			}
		}
		if e, ok := m.statusEvent(ctx); ok {
			send(e)
		}
		for ev := range events {
			if e, ok := translate(ev); ok {
				send(e)
			} else if ev.Event == "STOP" {
				// A stop says nothing of why: the run state does.
				if e, ok := m.statusEvent(ctx); ok {
					send(e)
				}
			}
		}
	}()
	return out, nil
}

// translate maps the QMP events that speak for themselves.
func translate(ev qmp.Event) (Event, bool) {
	switch ev.Event {
	case "GUEST_PANICKED":
		return Event{GuestFailed, ReasonPanicked}, true
	case "SHUTDOWN":
		// A panic with QEMU's default action (shutdown) ends in a SHUTDOWN too; the
		// GUEST_PANICKED before it tells.
		if ev.Data["guest"] == true && ev.Data["reason"] != "guest-panic" {
			return Event{Kind: GuestPoweredOff, Reason: "the guest shut itself down"}, true
		}
	case "RESET":
		if ev.Data["guest"] == true {
			return Event{Kind: GuestReset, Reason: "the guest reset itself"}, true
		}
	}
	return Event{}, false
}

// statusEvent asks QEMU for its run state and reports a failed guest.
func (m *Machine) statusEvent(ctx context.Context) (Event, bool) {
	st, err := m.Status(ctx)
	if err != nil {
		return Event{}, false // QMP is gone: the exit tells
	}
	return failedState(st.State)
}

// failedState maps QEMU's run states in which a guest cannot go on.
func failedState(s RunState) (Event, bool) {
	switch s {
	case RunStateInternalError:
		return Event{GuestFailed, ReasonInternalError}, true
	case RunStateGuestPanicked:
		return Event{GuestFailed, ReasonPanicked}, true
	}
	return Event{}, false
}

func (k EventKind) String() string {
	switch k {
	case GuestPoweredOff:
		return "guest powered off"
	case GuestFailed:
		return "guest failed"
	case GuestReset:
		return "guest reset"
	}
	return fmt.Sprintf("event %d", int(k))
}
