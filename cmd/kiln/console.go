package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func newConsoleCommand(e *env) *cobra.Command {
	var follow, attach bool
	var tail int
	cmd := &cobra.Command{
		Use:   "console INSTANCE",
		Short: "Print an instance's serial console log (--follow: and what comes next; --attach: type into it)",
		Long: `Prints the instance's serial console log: every boot's output, each after a line
"-- kiln: boot N at TIME (i-…) --" that kilnd writes as it starts QEMU. kilnd keeps the
log's last part (consoleLimitMiB). --tail N prints only its last N lines; --follow goes on
printing what comes until the instance stops.

--attach connects the terminal to the running instance's serial console: what you type
the guest reads, its output shows live. Ctrl-] detaches. The terminal is raw while
attached (Ctrl-C goes to the guest). Without a terminal, standard input is sent as it is,
and its end detaches too. One client can be attached to an instance at a time; the log
keeps everything, attached or not.`,
		Args: exactArgs(1, "one INSTANCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("tail") && tail < 0 {
				return usageError{fmt.Errorf("--tail %d: want a number of lines, 0 or more", tail)}
			}
			if attach {
				if follow || cmd.Flags().Changed("tail") {
					return usageError{errors.New("--attach shows the console live from now on: it takes neither --follow nor --tail (see the log with kiln console --tail N first)")}
				}
				return attachConsole(cmd.Context(), e, args[0])
			}
			return e.client().ConsoleTail(cmd.Context(), args[0], follow, tail, e.stdout)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the instance stops")
	cmd.Flags().IntVarP(&tail, "tail", "n", -1, "print only the last N lines (with --follow: then what comes)")
	cmd.Flags().BoolVar(&attach, "attach", false, "attach the terminal to the running instance's serial console (Ctrl-] detaches)")
	return cmd
}

// escapeKey detaches an attached console: Ctrl-], as for virsh console and telnet.
const escapeKey = 0x1d

// How an attached session ended, as copyInput or the connection says.
var (
	errEscaped  = errors.New("escape character")
	errInputEnd = errors.New("end of input")
)

// copyInput sends src to dst until src holds escapeKey (what came before it is sent;
// errEscaped), src ends (errInputEnd) or either fails (that error).
func copyInput(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		b, escaped := buf[:n], false
		if i := bytes.IndexByte(b, escapeKey); i >= 0 {
			b, escaped = b[:i], true
		}
		if len(b) > 0 {
			if _, werr := dst.Write(b); werr != nil {
				return werr
			}
		}
		switch {
		case escaped:
			return errEscaped
		case err == io.EOF:
			return errInputEnd
		case err != nil:
			return fmt.Errorf("standard input: %w", err)
		}
	}
}

// attachConsole attaches e's standard input and output to the instance's serial console
// until the user detaches (escapeKey, or the end of a standard input that is not a
// terminal), the console closes (the instance stopped, kilnd went) or kiln is signalled.
// A terminal on standard input is raw meanwhile, and restored however it ends but by a
// second signal or SIGKILL.
func attachConsole(ctx context.Context, e *env, ref string) error {
	conn, id, err := e.client().AttachConsole(ctx, ref)
	if err != nil {
		return err
	}
	defer conn.Close()
	nl := "\n"
	if f, ok := e.stdin.(*os.File); ok {
		restore, err := makeRaw(f)
		switch {
		case err == nil:
			defer restore()
			nl = "\r\n" // the terminal no longer makes \n a new line
		case !errors.Is(err, errNotTerminal):
			return err
		}
	}
	fmt.Fprintf(e.stderr, "Connected to %s (escape character is ^])%s", id, nl)
	ended := make(chan error, 2)
	go func() {
		_, err := io.Copy(e.stdout, conn)
		if err == nil {
			err = io.EOF
		}
		ended <- err
	}()
	go func() { ended <- copyInput(conn, e.stdin) }()
	select {
	case err = <-ended:
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	conn.Close()
	switch {
	case errors.Is(err, errEscaped), errors.Is(err, errInputEnd):
		fmt.Fprintf(e.stderr, "%sDetached from %s%s", nl, id, nl)
		return nil
	case errors.Is(err, io.EOF):
		fmt.Fprintf(e.stderr, "%sThe console of %s closed: the instance stopped, or kilnd did%s", nl, id, nl)
		return nil
	case ctx.Err() != nil:
		fmt.Fprintf(e.stderr, "%s", nl)
		return err
	}
	return fmt.Errorf("console of %s: %w", id, err)
}
