package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

// lifecycle is what one of stop, start, reboot and terminate is.
type lifecycle struct {
	action, short, long string
	force               bool         // it takes --force
	wait                instanceWait // what --wait waits for
	until               string       // --wait's help: "wait until …"
	timeout             time.Duration
}

// newLifecycleCommand makes stop, start, reboot and terminate, which share their shape:
// INSTANCE..., --force where it means something, --wait for the state they lead to.
// Every instance is asked first; --wait then waits for them all within one --timeout.
func newLifecycleCommand(e *env, lc lifecycle) *cobra.Command {
	var forceFlag bool
	var opts waitOptions
	cmd := &cobra.Command{
		Use:   lc.action + " INSTANCE... [--wait [--timeout DURATION]]",
		Short: lc.short,
		Long:  lc.long + "\n\n" + waitTimeoutMeans,
		Args:  minArgs(1, "at least one INSTANCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := opts.check(cmd); err != nil {
				return err
			}
			c := e.client()
			var last error
			fail := func(err error) {
				if last != nil {
					reportError(e.stderr, last)
				}
				last = err
			}
			var asked []api.Instance
			for i, ref := range args {
				if in, ok := interruptedBy(cmd.Context()); ok { // ask nothing more
					fail(exitError{code: in.exitCode(), msg: fmt.Sprintf("kiln: %v: not asked: %s\n", in, strings.Join(args[i:], " "))})
					break
				}
				inst, err := c.InstanceAction(uncut(cmd.Context()), ref, lc.action, forceFlag)
				if err != nil {
					fail(err)
					continue
				}
				asked = append(asked, inst)
			}
			if opts.wait && len(asked) > 0 {
				var err error
				if asked, err = waitInstances(cmd.Context(), e, c, &opts, asked, lc.wait); err != nil {
					fail(err)
				}
			}
			for _, inst := range asked {
				if e.output == "json" {
					printJSON(e.stdout, inst)
				} else {
					fmt.Fprintln(e.stdout, inst.ID)
				}
			}
			return last
		},
	}
	if lc.force {
		cmd.Flags().BoolVar(&forceFlag, "force", false, "do not ask the guest to shut down and wait: off at once")
	}
	opts.addFlags(cmd, lc.until, lc.timeout)
	return cmd
}

// graceSeconds is how long a guest has to answer the power button, in seconds.
const graceSeconds = int(api.StopGrace / time.Second)

func newStopCommand(e *env) *cobra.Command {
	return newLifecycleCommand(e, lifecycle{action: "stop", force: true,
		short: "Stop instances (ACPI power button, then QMP quit, then kill)",
		long: fmt.Sprintf(`Stop instances. Each gets the ACPI power button and %[1]d s to shut down; one that
has not is then forced off (QMP quit, SIGTERM, SIGKILL), and its state reason says
"forced off after %[1]d s without a shutdown". --force skips the power button.
--wait waits until they are stopped, and says so when a guest has not answered the
power button after a few seconds.`, graceSeconds),
		wait:  instanceWait{want: "stopped", doing: "stopping", force: "kiln stop"},
		until: "the instances are stopped", timeout: timeoutStop})
}

func newStartCommand(e *env) *cobra.Command {
	return newLifecycleCommand(e, lifecycle{action: "start",
		short: "Start stopped instances",
		long:  "Start stopped instances, with their volumes as they were. --wait waits until they are ready.\n\n" + readyMeans,
		wait:  instanceWait{want: "ready", doing: "starting"},
		until: `the instances are ready (see "Ready" above)`, timeout: timeoutBoot})
}

func newRebootCommand(e *env) *cobra.Command {
	return newLifecycleCommand(e, lifecycle{action: "reboot",
		short: "Reboot instances (a reset)",
		long:  "Reboot instances: a reset, as of the machine's reset button. --wait waits until they are ready again.\n\n" + readyMeans,
		wait:  instanceWait{want: "ready", doing: "rebooting"},
		until: `the instances are ready again (see "Ready" above)`, timeout: timeoutBoot})
}

func newTerminateCommand(e *env) *cobra.Command {
	cmd := newLifecycleCommand(e, lifecycle{action: "terminate", force: true,
		short: "Terminate instances: they stop and their volumes are deleted",
		long: fmt.Sprintf(`Terminate instances: each is stopped as by kiln stop (the power button, up to %d s,
then forced off) and the volumes deleted on termination go. --wait waits until they
are terminated.`, graceSeconds),
		wait:  instanceWait{want: "terminated", doing: "shutting down", force: "kiln terminate"},
		until: "the instances are terminated", timeout: timeoutStop})
	cmd.SuggestFor = []string{"rm", "kill", "delete", "destroy", "remove"}
	return cmd
}
