package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

// version is stamped by the Makefile.
var version = "dev"

func main() {
	ctx, stop := notifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := runWith(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// notifyContext is ctx ending at the first of the signals, with interrupted as its
// cause (so a wait can say what is still under way). A second signal has its default
// effect: it ends kiln at once.
func notifyContext(ctx context.Context, sigs ...os.Signal) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		select {
		case sig := <-ch:
			signal.Stop(ch)
			cancel(interrupted{sig.(syscall.Signal)})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(context.Canceled)
	}
}

// usageError marks an error in how kiln was called (exit status 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// env is what every command shares: the client and the output settings.
type env struct {
	socket string
	output string // table or json
	quiet  bool
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	c      *client.Client // made at the first use: --socket is parsed by then
}

// client is the one client of this run of kiln.
func (e *env) client() *client.Client {
	if e.c == nil {
		e.c = client.New(e.socket)
	}
	return e.c
}

// run runs kiln with args and no standard input, and returns its exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, eofReader{}, stdout, stderr)
}

// eofReader is an empty standard input.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// runWith is run with a standard input.
func runWith(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCommand(e)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)

	cmd, err := root.ExecuteContextC(ctx)
	if e.c != nil {
		e.c.Close()
	}
	if err == nil {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintf(stderr, "kiln: %v\nRun '%s --help' for usage.\n", err, cmd.CommandPath())
		return 2
	}
	var xe exitError
	if errors.As(err, &xe) {
		printExit(stderr, xe)
		return xe.code
	}
	if in, ok := interruptedBy(ctx); ok {
		fmt.Fprintf(stderr, "kiln: %v\n", in)
		return in.exitCode()
	}
	reportError(stderr, err)
	return 1
}

// newRootCommand is kiln's command tree, its commands bound to e. run executes it;
// the command reference (docs/cli.md, reference_test.go) is made from it.
func newRootCommand(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "kiln",
		Short:         "kiln: machine images and instances on this machine",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          subcommandArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if e.output != "table" && e.output != "json" {
				return usageError{fmt.Errorf("-o %q: want table or json", e.output)}
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&e.socket, "socket", client.DefaultSocket(), "kilnd's socket (or $KILN_SOCKET)")
	// The default depends on who runs kiln and where: the reference says so in words.
	_ = root.PersistentFlags().SetAnnotation("socket", docDefault,
		[]string{"/run/kiln/kiln.sock for root, else $XDG_RUNTIME_DIR/kiln/kiln.sock"})
	root.PersistentFlags().StringVarP(&e.output, "output", "o", "table", "output: table or json")
	root.PersistentFlags().BoolVarP(&e.quiet, "quiet", "q", false, "print ids only, one a line")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newInfoCommand(e), newImageCommand(e), newGCCommand(e),
		newRunCommand(e), newSnapshotCommand(e), newVolumeCommand(e), newKeyPairCommand(e), newAccessKeyCommand(e), newInstanceCommand(e), newInstanceLsCommand(e, "ps"), newConsoleCommand(e), newSSHCommand(e), newCpCommand(e), newExecCommand(e),
		newStopCommand(e), newStartCommand(e), newRebootCommand(e), newTerminateCommand(e))
	root.AddCommand(newRegistryCommand(e))
	root.AddCommand(newRecycleBinCommand(e))
	root.AddCommand(newEventsCommand(e))
	root.AddCommand(newTagCommand(e), newUntagCommand(e))

	addCompletions(e, root)
	return root
}

// docDefault is the annotation of a flag whose default depends on the environment
// (the user, $KILN_SOCKET): the command reference shows its text instead of the value
// at hand, so that docs/cli.md is the same wherever it is made.
const docDefault = "kiln/doc-default"

// reportError prints an error of the daemon's (its code, message and a hint) or any
// other error to stderr.
func reportError(stderr io.Writer, err error) {
	var ae *api.Error
	var xe exitError
	if errors.As(err, &xe) {
		printExit(stderr, xe)
		return
	}
	if !errors.As(err, &ae) {
		fmt.Fprintf(stderr, "kiln: %s\n", cleanLines(err.Error()))
		return
	}
	fmt.Fprintf(stderr, "kiln: %s: %s\n", clean(ae.Code), cleanLines(ae.Message))
	if h := hint(ae.Code); h != "" {
		fmt.Fprintf(stderr, "hint: %s\n", h)
	}
}

// isCobraUsage recognises cobra's own usage errors (unknown command, wrong arguments).
func isCobraUsage(err error) bool {
	var ae argsError
	return errors.As(err, &ae) || isUnknownCommand(err)
}

// hint says what to do about an error code.
func hint(code string) string {
	switch code {
	case api.CodeInvalidAMIIDNotFound:
		return "'kiln image ls' lists the images you can use"
	case api.CodeInvalidAMINameDuplicate:
		return "names are unique per owner: choose another name, or deregister the other image"
	case api.CodeUnknownParameter, api.CodeInvalidRequest, api.CodeRequestTooLarge:
		return "this client and kilnd may be of different versions ('kiln info')"
	case api.CodeIncorrectState:
		return "'kiln image inspect' or 'kiln instance inspect' shows the state"
	case api.CodeInvalidSnapshotNotFound:
		return "'kiln snapshot ls' lists your snapshots"
	case api.CodeInvalidInstanceNotFound:
		return "'kiln ps -a' lists your instances"
	case api.CodeInvalidVolumeNotFound:
		return "'kiln volume ls' lists your volumes"
	case api.CodeInvalidKeyPairNotFound:
		return "'kiln key-pair ls' lists your key pairs"
	case api.CodeUnauthorizedOperation:
		return "only the owner or an administrator may do that"
	case api.CodeQuotaExceeded:
		return "'kiln ps' shows your running instances, 'kiln image ls --owner self' your images"
	}
	return ""
}
