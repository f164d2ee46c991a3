package hypervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// RunState is QEMU's run state of a machine, in QMP's words ("running", "paused",
// "shutdown", …): the constants are those kiln acts on.
type RunState string

const (
	RunStateRunning       RunState = "running"
	RunStatePaused        RunState = "paused"
	RunStateGuestPanicked RunState = "guest-panicked" // a panic with -action panic=pause
	RunStateInternalError RunState = "internal-error" // the accelerator could not go on
)

// Status is what QEMU says of a machine's vCPUs.
type Status struct {
	State   RunState
	Running bool // the vCPUs run
}

// Status asks QEMU for the machine's run state.
func (m *Machine) Status(ctx context.Context) (Status, error) {
	out, err := m.run(ctx, "query-status", nil)
	if err != nil {
		return Status{}, err
	}
	var reply struct {
		Return struct {
			Status  RunState `json:"status"`
			Running bool     `json:"running"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &reply); err != nil {
		return Status{}, fmt.Errorf("query-status reply %.80q: %w", out, err)
	}
	return Status{State: reply.Return.Status, Running: reply.Return.Running}, nil
}

// Powerdown presses the machine's ACPI power button and returns once QEMU has taken
// the press, not when the guest is off: a guest that listens shuts itself down, and
// Exited (or Watch's GuestPoweredOff) tells when. It may be called again.
func (m *Machine) Powerdown(ctx context.Context) error {
	if err := m.qmp(ctx, "system_powerdown", nil); err != nil {
		return fmt.Errorf("power button: %w", err)
	}
	return nil
}

// resetWait bounds how long Reboot waits for QEMU to carry out a reset it accepted.
const resetWait = 10 * time.Second

// Reboot resets the machine, as its reset button would (the guest is not asked), and
// returns once QEMU has reset it: what the guest prints from then on is of the new
// boot. QEMU carries out a reset after it answers the command, so Reboot waits for the
// reset itself, up to resetWait.
func (m *Machine) Reboot(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := m.client.Events(ctx)
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	if err := m.qmp(ctx, "system_reset", nil); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	t := time.NewTimer(resetWait)
	defer t.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return errors.New("reset: QMP closed before QEMU reset the machine")
			}
			// Any reset from now on: one the guest asked for at the same time is
			// carried out as the same one.
			if ev.Event == "RESET" {
				return nil
			}
		case <-t.C:
			return fmt.Errorf("reset: QEMU took the command but did not reset the machine within %s", resetWait)
		case <-ctx.Done():
			return fmt.Errorf("reset: %w", ctx.Err())
		}
	}
}

// depth is how many files the disk's chain has in QEMU: as kept since Start, or else
// (after Attach, or a change that failed half-way) counted from QEMU's block nodes.
// The caller holds blockMu.
func (m *Machine) depth(ctx context.Context, disk string) (int, error) {
	if d, ok := m.depths[disk]; ok {
		return d, nil
	}
	out, err := m.run(ctx, "query-named-block-nodes", map[string]any{"flat": true})
	if err != nil {
		return 0, fmt.Errorf("disk %s: %w", disk, err)
	}
	var reply struct {
		Return []struct {
			NodeName string `json:"node-name"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &reply); err != nil {
		return 0, fmt.Errorf("query-named-block-nodes reply %.80q: %w", out, err)
	}
	depth := 0
	for _, n := range reply.Return {
		if i, ok := formatNodeIndex(disk, n.NodeName); ok {
			depth = max(depth, i+1)
		}
	}
	if depth == 0 {
		return 0, fmt.Errorf("disk %s: no block nodes in QEMU", disk)
	}
	m.depths[disk] = depth
	return depth, nil
}

// formatNodeIndex is i when name is formatNode(disk, i).
func formatNodeIndex(disk, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, disk+"-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || strconv.Itoa(i) != rest {
		return 0, false
	}
	return i, true
}

// qmp runs one command, with arguments (a value that marshals to a JSON object) or
// none (nil). blockdev-add is sent this way: go-qemu's typed BlockdevAdd is not used.
func (m *Machine) qmp(ctx context.Context, command string, args any) error {
	_, err := m.run(ctx, command, args)
	return err
}

// run is qmp returning QEMU's reply.
func (m *Machine) run(ctx context.Context, command string, args any) ([]byte, error) {
	cmd := map[string]any{"execute": command}
	if args != nil {
		cmd["arguments"] = args
	}
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	return m.client.RunContext(ctx, b)
}

// agentDial bounds how long kilnd waits for the agent's socket to take its connection;
// agentShutdownWait how long Shutdown tries the agent before the power button: a guest
// whose agent is wedged must not hold a stop up.
const (
	agentDial         = 5 * time.Second
	agentShutdownWait = 8 * time.Second
)

// AgentOpen reports whether the guest has its agent's port open, that is whether
// qemu-guest-agent runs in it: QEMU's query-chardev says whether the port's guest side
// is open. It asks QEMU only, never the guest, and so answers at once.
func (m *Machine) AgentOpen(ctx context.Context) (bool, error) {
	out, err := m.run(ctx, "query-chardev", nil)
	if err != nil {
		return false, err
	}
	var reply struct {
		Return []struct {
			Label        string `json:"label"`
			FrontendOpen bool   `json:"frontend-open"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &reply); err != nil {
		return false, fmt.Errorf("query-chardev reply %.80q: %w", out, err)
	}
	for _, c := range reply.Return {
		if c.Label == "agent" {
			return c.FrontendOpen, nil
		}
	}
	return false, nil // a machine started before instances had an agent port
}

// withAgent runs f on the machine's connection to its guest agent, dialled on first
// use, and dialled again when it broke (a guest that rebooted, a QEMU that dropped it),
// where f runs again too if retry (f may be done twice). A guest whose agent does not
// run is ErrFailedPrecondition.
func (m *Machine) withAgent(ctx context.Context, retry bool, f func(*Agent) error) error {
	open, err := m.AgentOpen(ctx)
	if err != nil {
		return err
	}
	if !open {
		return fmt.Errorf("the guest runs no agent (qemu-guest-agent), or it has not started yet: %w", errdefs.ErrFailedPrecondition)
	}
	for try := 0; ; try++ {
		a, err := m.agentConn(ctx)
		if err != nil {
			return err
		}
		err = f(a)
		if errdefs.IsUnavailable(err) {
			m.dropAgent(a)
		}
		if try > 0 || !retry || !errdefs.IsUnavailable(err) {
			return err
		}
	}
}

// agentConn returns the agent's connection, dialling it when there is none.
func (m *Machine) agentConn(ctx context.Context) (*Agent, error) {
	m.agentMu.Lock()
	defer m.agentMu.Unlock()
	if m.agent == nil {
		dctx, cancel := context.WithTimeout(ctx, agentDial)
		defer cancel()
		a, err := DialAgent(dctx, filepath.Join(m.Dir, AgentSocket))
		if err != nil {
			return nil, err
		}
		m.agent = a
	}
	return m.agent, nil
}

// dropAgent closes a, if it is still the machine's connection.
func (m *Machine) dropAgent(a *Agent) {
	m.agentMu.Lock()
	defer m.agentMu.Unlock()
	if m.agent == a {
		m.agent = nil
	}
	a.Close()
}

// closeAgent closes the agent's connection, if any: QEMU is gone.
func (m *Machine) closeAgent() {
	m.agentMu.Lock()
	defer m.agentMu.Unlock()
	if m.agent != nil {
		m.agent.Close()
		m.agent = nil
	}
}

// Exec runs a program in the guest through its agent and returns how it ended
// (Agent.Exec); ErrFailedPrecondition when the guest runs no agent.
func (m *Machine) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	var res ExecResult
	err := m.withAgent(ctx, false, func(a *Agent) (err error) { // never twice: the program might run twice
		res, err = a.Exec(ctx, req)
		return err
	})
	return res, err
}

// Shutdown asks the guest to power off: through its agent when it runs one (as a
// shutdown typed in the guest), else with the power button. It returns once the guest
// was asked, saying how (and why not through the agent, when it had one); Exited tells
// when it is off. It may be called again.
func (m *Machine) Shutdown(ctx context.Context) (string, error) {
	// Bounded whatever the agent's connection is doing (an exec may hold it): past the
	// bound the connection is closed, which ends what waits on it.
	actx, cancel := context.WithTimeout(ctx, agentShutdownWait)
	done := make(chan error, 1)
	go func() {
		done <- m.withAgent(actx, true, func(a *Agent) error { return a.Shutdown(actx, ShutdownPowerdown) })
	}()
	var err error
	select {
	case err = <-done:
	case <-actx.Done():
		m.closeAgent()
		err = fmt.Errorf("the guest agent did not take the shutdown within %s: %w", agentShutdownWait, errdefs.ErrUnavailable)
	}
	cancel()
	if err == nil {
		return "guest agent", nil
	}
	how := "power button"
	if !errdefs.IsFailedPrecondition(err) {
		how += " (the guest agent: " + err.Error() + ")"
	}
	if err := m.Powerdown(ctx); err != nil {
		return "", err
	}
	return how, nil
}
