package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newExecCommand(e *env) *cobra.Command {
	var env []string
	var stdin bool
	var timeout int
	cmd := &cobra.Command{
		Use:   "exec INSTANCE [--] COMMAND...",
		Short: "Run a program in an instance through its guest agent (no network or ssh needed)",
		Long: `Runs COMMAND in the guest through qemu-guest-agent, as the agent's user (root), without
a shell (give sh -c '…' for one), and prints what it printed. kiln exits with its exit
status (128+N when signal N ended it). The output comes once the program has exited.`,
		Args: minArgs(2, "INSTANCE and a COMMAND"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.ExecRequest{Command: commandArgs(args[1:]), Env: env, TimeoutSeconds: timeout}
			if len(req.Command) == 0 {
				return usageError{fmt.Errorf("exec: want a COMMAND after %s", args[0])}
			}
			if stdin {
				b, err := io.ReadAll(io.LimitReader(os.Stdin, api.MaxExecInput+1))
				if err != nil {
					return fmt.Errorf("--interactive: standard input: %w", err)
				}
				if len(b) > api.MaxExecInput {
					return usageError{fmt.Errorf("--interactive: standard input is over %d bytes; copy files with kiln cp", api.MaxExecInput)}
				}
				req.Stdin = b
			}
			res, err := e.client().Exec(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if e.output == "json" {
				if err := printJSON(e.stdout, res); err != nil {
					return err
				}
			} else {
				e.stdout.Write(res.Stdout)
				e.stderr.Write(res.Stderr)
				for _, t := range []struct {
					cut  bool
					name string
				}{{res.StdoutTruncated, "standard output"}, {res.StderrTruncated, "standard error"}} {
					if t.cut {
						fmt.Fprintf(e.stderr, "kiln: the guest agent kept only the start of its %s\n", t.name)
					}
				}
			}
			switch {
			case res.TimedOut: // as timeout(1) says it
				return exitError{code: 124, msg: fmt.Sprintf("kiln: %s still runs in the guest after %d s (process %d)", req.Command[0], timeout, res.PID)}
			case res.Signal > 0:
				return exitError{code: 128 + res.Signal, msg: fmt.Sprintf("kiln: %s ended by signal %d", req.Command[0], res.Signal)}
			case res.ExitCode != 0:
				return exitError{code: res.ExitCode}
			}
			return nil
		},
	}
	cmd.Flags().SetInterspersed(false) // what follows INSTANCE is the command's
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "NAME=value of the program's environment (repeatable; replaces the agent's)")
	cmd.Flags().BoolVarP(&stdin, "interactive", "i", false, "give the program kiln's standard input (read whole first, at most 512 KiB)")
	cmd.Flags().IntVar(&timeout, "timeout", 0, "seconds to wait for the program (it goes on in the guest past them); default: until it exits")
	return cmd
}
