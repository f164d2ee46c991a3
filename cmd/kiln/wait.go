package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

// readyMeans is what every help text that waits for "ready" says it is. It must say
// what the daemon checks (daemon/server_instances.go, readyMarker).
const readyMeans = `"Ready" means: the instance is running and, since QEMU last started it (or it was
last rebooted), its guest has printed "KILN-GUEST ready" (the test guest) or
cloud-init's final line ("Cloud-init v. … finished at …") on its serial console. A
guest that prints neither is never ready: --wait then gives up at --timeout.`

// waitTimeoutMeans is what every help text says of --timeout.
const waitTimeoutMeans = `--timeout bounds the wait (not the request that starts the work). When it passes,
kiln says how far things got (state, ready or not, an instance's last console lines;
an image's progress) and exits with status 1; the work goes on in kilnd and the
instance keeps running. Ctrl-C during a wait says what is still under way and exits
with status 130; the work goes on too.`

// Default --timeout of each --wait: long enough for a slow host (a guest booting
// without KVM, a large disk converted), never forever.
const (
	timeoutBoot      = 5 * time.Minute  // run, start, reboot: until ready
	timeoutStop      = 2 * time.Minute  // stop, terminate: 30 s for the power button, then forced
	timeoutImage     = 30 * time.Minute // image register, image create
	timeoutImageCopy = time.Minute      // image copy: available at once
)

// powerButtonPatience is how long a stop waits before it says the guest has not yet
// answered the power button.
const powerButtonPatience = 5 * time.Second

// consoleTail is how many of an instance's last console lines a wait that ends shows.
const consoleTail = 15

// errWaitTimeout is the cause of a wait's context when its --timeout passed.
var errWaitTimeout = errors.New("the --timeout passed")

// interrupted is the cause of kiln's context when a signal (Ctrl-C) ended it.
type interrupted struct{ sig syscall.Signal }

func (i interrupted) Error() string {
	if i.sig == syscall.SIGINT {
		return "interrupted (Ctrl-C)"
	}
	return "ended by a signal (" + i.sig.String() + ")"
}

// exitCode is the exit status for a process ended by the signal, as a shell has it.
func (i interrupted) exitCode() int { return 128 + int(i.sig) }

// interruptedBy reports the signal that ended ctx, if one did.
func interruptedBy(ctx context.Context) (interrupted, bool) {
	var in interrupted
	ok := errors.As(context.Cause(ctx), &in)
	return in, ok
}

// exitError ends kiln with an exit status and a message printed as it is.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// waitOptions are --wait and --timeout of a command that starts something long.
type waitOptions struct {
	wait    bool
	timeout time.Duration
	// deadline, once set, is when the timeout passes: one command's waits share it.
	deadline time.Time
}

// addFlags adds --wait (until what) and --timeout (with its default) to cmd.
func (w *waitOptions) addFlags(cmd *cobra.Command, until string, def time.Duration) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, "wait until "+until)
	cmd.Flags().DurationVar(&w.timeout, "timeout", def, "with --wait: give up waiting after DURATION (exit status 1; the work goes on)")
}

// check refuses a --timeout that cannot be meant: one without --wait, or not positive.
func (w *waitOptions) check(cmd *cobra.Command) error {
	if cmd.Flags().Changed("timeout") && !w.wait {
		return usageError{fmt.Errorf("--timeout bounds --wait: add --wait")}
	}
	if w.timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %s: want a positive duration such as 90s or 10m", w.timeout)}
	}
	return nil
}

// context is ctx ending when the timeout passes (counted from the first wait), with
// errWaitTimeout as its cause.
func (w *waitOptions) context(ctx context.Context) (context.Context, context.CancelFunc) {
	if w.deadline.IsZero() {
		w.deadline = time.Now().Add(w.timeout)
	}
	return context.WithDeadlineCause(ctx, w.deadline, errWaitTimeout)
}

// uncut is ctx for a request that starts work kiln then waits for (run, start, stop,
// image create, copy): a signal does not cut the request short, so that kiln learns what
// it started and can name it rather than leave work it cannot name; the wait that
// follows ends at once. A second signal ends kiln where it is.
func uncut(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// aside is a short context for what kiln asks kilnd after a wait ended (its own
// context may be done): to say how far things got.
func aside(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
}

// instanceWait is a wait for instances to reach a state after an action.
type instanceWait struct {
	want  string // ready, running, stopped, terminated
	doing string // what is under way meanwhile: "starting", "stopping", …
	force string // the command whose --force skips waiting for the power button, if any
}

// waitInstances waits for each instance as w says, all within opts.timeout, and returns
// them as they ended. It ends early with an exitError when the timeout passes (exit
// status 1: state, readiness, console tail) or a signal comes (128+n: what is still
// under way), and with the error of an instance that settled elsewhere; done are the
// instances that got there before.
func waitInstances(ctx context.Context, e *env, c *client.Client, opts *waitOptions, insts []api.Instance, w instanceWait) (done []api.Instance, err error) {
	wctx, cancel := opts.context(ctx)
	defer cancel()
	start := time.Now()
	tty := isTerminal(e.stderr) && !e.quiet
	for i, inst := range insts {
		said := false
		got, err := c.WaitInstanceProgress(wctx, inst.ID, w.want, func(cur api.Instance) {
			if tty {
				fmt.Fprintf(e.stderr, "\r%s %s %5.1fs\x1b[K", cur.ID, describeInstance(cur), time.Since(start).Seconds())
			}
			if w.force != "" && !said && cur.ForceOffAt != nil && time.Since(start) >= powerButtonPatience {
				said = true
				if tty {
					fmt.Fprintln(e.stderr)
				}
				left := max(time.Until(*cur.ForceOffAt).Round(time.Second), 0)
				fmt.Fprintf(e.stderr, "%s has not shut down when asked; waiting up to %d s more, then it is forced off (%s --force skips the wait)\n",
					cur.ID, int(left/time.Second), w.force)
			}
		})
		if tty {
			fmt.Fprintln(e.stderr)
		}
		if err == nil {
			done = append(done, got)
			continue
		}
		if in, ok := interruptedBy(ctx); ok {
			var b strings.Builder
			for _, rest := range insts[i:] {
				fmt.Fprintf(&b, "kiln: %s is still %s; kiln ps\n", rest.ID, w.doing)
			}
			return done, exitError{code: in.exitCode(), msg: b.String()}
		}
		if errors.Is(context.Cause(wctx), errWaitTimeout) {
			cur, reached, msg := instanceReport(ctx, c, inst.ID, w, opts.timeout, insts[i+1:])
			if reached && i == len(insts)-1 { // it got there as the time ran out
				return append(done, cur), nil
			}
			return done, exitError{code: 1, msg: msg}
		}
		if errors.Is(err, client.ErrInstanceSettled) {
			return done, exitError{code: 1, msg: fmt.Sprintf("kiln: %v\n%s", err, consoleLines(ctx, c, inst.ID))}
		}
		return done, err
	}
	return done, nil
}

// instanceReport says that a wait for the instance timed out and how far it got: its
// state, whether it is ready, its last console lines, and that it goes on. It also
// returns the instance as it is now and whether it got there after all.
func instanceReport(ctx context.Context, c *client.Client, id string, w instanceWait, timeout time.Duration, rest []api.Instance) (api.Instance, bool, string) {
	var b strings.Builder
	fmt.Fprintf(&b, "kiln: gave up after %s waiting for %s to be %s\n", timeout, id, w.want)
	actx, cancel := aside(ctx)
	defer cancel()
	inst, err := c.Instance(actx, id)
	if err != nil {
		fmt.Fprintf(&b, "  its state is unknown: %v\n", err)
	} else {
		fmt.Fprintf(&b, "  state: %s\n", describeInstance(inst))
		if inst.State == "running" && !inst.Ready {
			b.WriteString("  not ready: since it started, its guest has not printed \"KILN-GUEST ready\" or cloud-init's final line\n")
		}
	}
	b.WriteString(consoleLines(ctx, c, id))
	fmt.Fprintf(&b, "  %s is still %s; kiln leaves it so: kiln console %s shows its console, kiln ps its state\n", id, w.doing, id)
	for _, r := range rest {
		fmt.Fprintf(&b, "  %s was not waited for: kiln ps\n", r.ID)
	}
	reached := err == nil && (inst.State == w.want || w.want == "ready" && inst.Ready)
	return inst, reached, b.String()
}

// describeInstance is an instance's state in words: "running, not ready", "stopping
// (stopped by root)".
func describeInstance(inst api.Instance) string {
	s := inst.State
	if inst.State == "running" {
		if inst.Ready {
			s += ", ready"
		} else {
			s += ", not ready"
		}
	}
	if inst.StateReason != "" {
		s += " (" + inst.StateReason + ")"
	}
	if inst.CreatingImage != "" {
		s += "; creating image " + inst.CreatingImage
	}
	return clean(s) // it goes on a progress line as well as into messages
}

// consoleLines is the instance's last console lines, indented, for a report.
func consoleLines(ctx context.Context, c *client.Client, id string) string {
	actx, cancel := aside(ctx)
	defer cancel()
	text, err := c.ConsoleText(actx, id)
	if err != nil {
		return fmt.Sprintf("  its console cannot be read: %v\n", err)
	}
	lines := lastLines(text, consoleTail)
	if len(lines) == 0 {
		return "  its console is empty: the guest has printed nothing\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  last console lines (kiln console %s has them all):\n", id)
	for _, l := range lines {
		fmt.Fprintf(&b, "    | %s\n", l)
	}
	return b.String()
}

// lastLines is text's last n non-blank lines, with what a terminal would not print
// (control characters) dropped.
func lastLines(text string, n int) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimRightFunc(strings.Map(func(r rune) rune {
			if r < ' ' && r != '\t' || r == 0x7f {
				return -1
			}
			return r
		}, l), func(r rune) bool { return r == ' ' || r == '\t' })
		if l != "" {
			out = append(out, l)
		}
	}
	return out[max(len(out)-n, 0):]
}

// waitImageUntil waits for an image being made (doing: "being registered", …) as
// opts say: a progress bar on a terminal, an exitError when the timeout passes (exit
// status 1, the state and progress) or a signal comes (128+n, what is still under way).
func waitImageUntil(ctx context.Context, e *env, c *client.Client, opts *waitOptions, im api.Image, doing string) (api.Image, error) {
	wctx, cancel := opts.context(ctx)
	defer cancel()
	got, err := waitImage(wctx, e, c, im)
	if err == nil {
		return got, nil
	}
	if in, ok := interruptedBy(ctx); ok {
		return got, exitError{code: in.exitCode(), msg: fmt.Sprintf("kiln: %s is still %s; kiln image inspect %s\n", im.ID, doing, im.ID)}
	}
	if !errors.Is(context.Cause(wctx), errWaitTimeout) {
		return got, err
	}
	actx, cancel := aside(ctx)
	defer cancel()
	cur, ierr := c.Image(actx, im.ID)
	switch {
	case ierr != nil:
		return got, exitError{code: 1, msg: fmt.Sprintf("kiln: gave up after %s waiting for %s to be available; its state is unknown: %v\n", opts.timeout, im.ID, ierr)}
	case cur.State == "available": // it got there as the time ran out
		return cur, nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "kiln: gave up after %s waiting for %s to be available\n", opts.timeout, im.ID)
	fmt.Fprintf(&b, "  state: %s", cur.State)
	if cur.StateReason != "" {
		fmt.Fprintf(&b, " (%s)", cur.StateReason)
	}
	if p := cur.Progress; p != nil && p.BytesTotal > 0 {
		fmt.Fprintf(&b, ", %.0f%% done (%s of %s)", 100*float64(p.BytesDone)/float64(p.BytesTotal), humanBytes(p.BytesDone), humanBytes(p.BytesTotal))
	}
	fmt.Fprintf(&b, "\n  %s is still %s: kiln image inspect %s\n", im.ID, doing, im.ID)
	return got, exitError{code: 1, msg: b.String()}
}

// printExit prints an exitError's message, ending in a newline.
func printExit(w io.Writer, xe exitError) {
	if xe.msg == "" { // the program that exited said why
		return
	}
	fmt.Fprint(w, cleanLines(xe.msg))
	if !strings.HasSuffix(xe.msg, "\n") {
		fmt.Fprintln(w)
	}
}
