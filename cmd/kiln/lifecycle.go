package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newLifecycleCommand makes stop, start, reboot and terminate, which share their shape:
// INSTANCE..., --force where it means something, --wait for the state they lead to.
func newLifecycleCommand(e *env, action, short, waitFor string, force bool) *cobra.Command {
	var forceFlag, wait bool
	cmd := &cobra.Command{
		Use:   action + " INSTANCE...",
		Short: short,
		Args:  minArgs(1, "at least one INSTANCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := e.client()
			var last error
			for _, ref := range args {
				inst, err := c.InstanceAction(cmd.Context(), ref, action, forceFlag)
				if err == nil && wait && waitFor != "" {
					inst, err = c.WaitInstance(cmd.Context(), inst.ID, waitFor)
				}
				if err != nil {
					if last != nil {
						reportError(e.stderr, last)
					}
					last = err
					continue
				}
				if e.output == "json" {
					printJSON(e.stdout, inst)
				} else {
					fmt.Fprintln(e.stdout, inst.ID)
				}
			}
			return last
		},
	}
	if force {
		cmd.Flags().BoolVar(&forceFlag, "force", false, "do not wait for the guest to shut down cleanly")
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the instance is "+waitFor)
	return cmd
}

func newStopCommand(e *env) *cobra.Command {
	return newLifecycleCommand(e, "stop", "Stop instances (ACPI power button, then QMP quit, then kill)", "stopped", true)
}

func newStartCommand(e *env) *cobra.Command {
	return newLifecycleCommand(e, "start", "Start stopped instances", "ready", false)
}

func newRebootCommand(e *env) *cobra.Command {
	return newLifecycleCommand(e, "reboot", "Reboot instances (a reset)", "running", false)
}

func newTerminateCommand(e *env) *cobra.Command {
	return newLifecycleCommand(e, "terminate", "Terminate instances: they stop and their volumes are deleted", "terminated", true)
}
