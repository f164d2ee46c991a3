package main

import (
	"bytes"
	"context"
	"flag"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/client"

	"kiln/internal/kilntest"
)

// TestKilnProcess is kiln itself, run as a child process by the tests that signal it
// (KILN_TEST_PROCESS=1; kiln's arguments follow "--").
func TestKilnProcess(t *testing.T) {
	if os.Getenv("KILN_TEST_PROCESS") != "1" {
		t.Skip("kiln as a child process of TestWaitEnds")
	}
	os.Args = append([]string{"kiln"}, flag.Args()...)
	main()
}

// kilnProcess starts kiln as a child process (so that it can be sent signals); it is
// killed when ctx ends.
func kilnProcess(ctx context.Context, socket string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer, error) {
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"-test.run=^TestKilnProcess$", "--", "--socket", socket}, args...)...)
	cmd.Env = append(os.Environ(), "KILN_TEST_PROCESS=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr, cmd.Start()
}

// registerGuest registers the test guest as name, booting with cmdline.
func registerGuest(t *testing.T, socket, name, cmdline string) {
	t.Helper()
	g := kilntest.GuestFiles(t)
	g.Cmdline = cmdline
	if code, _, errOut := kiln(t, socket, append([]string{"image", "register", name, "--wait", "--timeout", "2m", "-q"}, g.RegisterFlags()...)...); code != 0 {
		t.Fatalf("register %s: exit %d: %s", name, code, errOut)
	}
}

var instanceID = regexp.MustCompile(`i-[0-9a-f]+`)

// TestWaitEnds: every --wait ends. A registration's wait gives up at its --timeout
// saying the image's state, and the registration goes on. On a guest that never says ready, run --wait gives up
// at its --timeout saying the state, that it is not ready and the console's last lines,
// and the instance runs on; Ctrl-C ends a wait with exit status 130 and says what goes
// on; a stop of a guest that ignores the power button says so while it waits and
// records that it was forced off; image create --wait and reboot --wait return once the
// instance is ready again, and Ctrl-C while an image is made says it is still being
// created.
func TestWaitEnds(t *testing.T) {
	if testing.Short() {
		t.Skip("boots guests")
	}
	socket := startDaemon(t)
	c := client.New(socket)
	evidence := func() string { return kilntest.InstancesEvidence(filepath.Join(filepath.Dir(socket), "root")) }
	t.Cleanup(func() { // before kilnd stops: no QEMU outlives the test
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		list, _ := c.Instances(ctx, false)
		for _, inst := range list {
			c.InstanceAction(ctx, inst.ID, "terminate", true)
			c.WaitInstance(ctx, inst.ID, "terminated")
		}
	})
	// The root device does not exist: the initrd gives up mounting it and sits in a
	// shell, so the guest never prints "KILN-GUEST ready" and has no acpid.
	registerGuest(t, socket, "never-ready", "console=ttyS0 root=/dev/vdz no_timer_check")
	registerGuest(t, socket, "kiln-guest", kilntest.GuestCmdline)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("image timeout", func(t *testing.T) {
		// 128 MiB that do not compress take a second to register here (the guest's disk
		// 100 ms): a 1 ms wait ends first, however the test is scheduled.
		g := kilntest.GuestFiles(t)
		disk := filepath.Join(t.TempDir(), "random.raw")
		noise := make([]byte, 128<<20)
		rand.NewChaCha8([32]byte{}).Read(noise)
		if err := os.WriteFile(disk, noise, 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := kiln(t, socket, "image", "register", "late", "--wait", "--timeout", "1ms",
			"--disk", disk+",format=raw", "--kernel", g.Kernel, "--initrd", g.Initrd)
		t.Logf("exit %d\n%s", code, errOut)
		id := regexp.MustCompile(`ami-[0-9a-f]+`).FindString(errOut)
		if code != 1 || out != "" || id == "" {
			t.Fatalf("image register --wait --timeout 1ms: exit %d, stdout %q; want exit 1 naming the image", code, out)
		}
		for _, want := range []string{
			"gave up after 1ms waiting for " + id + " to be available",
			"state: pending",
			id + " is still being registered: kiln image inspect " + id,
		} {
			if !strings.Contains(errOut, want) {
				t.Errorf("the message lacks %q", want)
			}
		}
		// The registration goes on.
		if im, err := c.WaitImage(ctx, id, nil); err != nil || im.State != "available" {
			t.Errorf("after the timeout: %s, %v; want it available", im.State, err)
		}
	})

	var silent string // the never-ready instance of the timeout, stopped at the end
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		code, out, errOut := kiln(t, socket, "run", "never-ready", "--type", "nano", "--wait", "--timeout", "5s")
		took := time.Since(start)
		silent = instanceID.FindString(errOut)
		t.Logf("exit %d after %s\n%s", code, took, errOut)
		if code != 1 || out != "" || silent == "" {
			t.Fatalf("run --wait --timeout 5s: exit %d, stdout %q; want exit 1 naming the instance", code, out)
		}
		// Not before its 5 s, and long before the default wait (5 minutes): the run's own
		// request, before the 5 s start, takes a few seconds on a busy machine.
		if took < 5*time.Second || took > time.Minute {
			t.Errorf("run --wait --timeout 5s took %s", took)
		}
		for _, want := range []string{
			"gave up after 5s waiting for " + silent + " to be ready",
			"state: running, not ready",
			`has not printed "KILN-GUEST ready" or cloud-init's final line`,
			"last console lines",
			silent + " is still starting",
		} {
			if !strings.Contains(errOut, want) {
				t.Errorf("the message lacks %q", want)
			}
		}
		// The console lines shown are the console's own, its last ones.
		con, err := c.ConsoleText(ctx, silent)
		if err != nil {
			t.Fatal(err)
		}
		var shown []string
		for _, l := range strings.Split(errOut, "\n") {
			if s, ok := strings.CutPrefix(l, "    | "); ok {
				shown = append(shown, s)
			}
		}
		all := strings.Join(lastLines(con, 1<<20), "\n")
		if len(shown) == 0 || !strings.Contains(all, strings.Join(shown, "\n")) {
			t.Errorf("console lines shown:\n%s\nnot the console's:\n%s", strings.Join(shown, "\n"), con)
		}
		// The instance keeps running.
		inst, err := c.Instance(ctx, silent)
		if err != nil || inst.State != "running" || inst.Ready || !kilntest.QEMUAlive(inst.PID) {
			t.Errorf("after the timeout: %+v, %v; want it running, not ready", inst, err)
		}
	})

	t.Run("interrupt", func(t *testing.T) {
		before := map[string]bool{}
		list, err := c.Instances(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, inst := range list {
			before[inst.ID] = true
		}
		cmd, _, stderr, err := kilnProcess(ctx, socket, "run", "never-ready", "--type", "nano", "--wait", "--timeout", "2m")
		if err != nil {
			t.Fatal(err)
		}
		// Ctrl-C once the instance runs and its guest printed something: kiln is waiting,
		// or still reading run's answer (a signal does not cut that request short).
		var id string
		kilntest.Poll(t, time.Minute, "a second instance that runs and prints", func() bool {
			list, _ := c.Instances(ctx, true)
			for _, inst := range list {
				if before[inst.ID] || inst.State != "running" {
					continue
				}
				if con, _ := c.ConsoleText(ctx, inst.ID); con != "" {
					id = inst.ID
					return true
				}
			}
			return false
		}, evidence)
		defer kiln(t, socket, "terminate", "--force", id)
		sent := time.Now()
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		t.Logf("kiln ended after %s: %v\n%s", time.Since(sent), err, stderr)
		if code := cmd.ProcessState.ExitCode(); code != 130 {
			t.Errorf("exit %d after Ctrl-C; want 130", code)
		}
		if want := "kiln: " + id + " is still starting; kiln ps"; !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q", want)
		}
		if time.Since(sent) > time.Minute { // long before its --timeout 2m
			t.Errorf("kiln took %s to end after Ctrl-C", time.Since(sent))
		}
		if inst, err := c.Instance(ctx, id); err != nil || inst.State != "running" {
			t.Errorf("after Ctrl-C: %+v, %v; want it running", inst, err)
		}
	})
	if silent == "" {
		t.Fatal("no never-ready instance to stop")
	}

	t.Run("guests", func(t *testing.T) {
		t.Run("forced stop", func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			code, out, errOut := kiln(t, socket, "stop", silent, "--wait", "--timeout", "90s")
			took := time.Since(start)
			t.Logf("exit %d after %s\n%s", code, took, errOut)
			if code != 0 || strings.TrimSpace(out) != silent {
				t.Fatalf("stop --wait: exit %d, stdout %q", code, out)
			}
			said := regexp.MustCompile(regexp.QuoteMeta(silent) + ` has not shut down when asked; waiting up to (\d+) s more, then it is forced off \(kiln stop --force skips the wait\)`).FindStringSubmatch(errOut)
			if said == nil {
				t.Errorf("stop --wait did not say the guest ignores the power button")
			} else if n, _ := strconv.Atoi(said[1]); n < 15 || n > 25 {
				t.Errorf("stop --wait says %s s are left; want about 25 (30 s less the 5 s it waits before saying so)", said[1])
			}
			if took < api.StopGrace {
				t.Errorf("stopped after %s, before the %s grace", took, api.StopGrace)
			}
			inst, err := c.Instance(ctx, silent)
			if err != nil || inst.State != "stopped" || !strings.HasSuffix(inst.StateReason, ": forced off after 30 s without a shutdown") {
				t.Errorf("after a forced stop: state %q, reason %q, %v", inst.State, inst.StateReason, err)
			}

			// stop --force cuts short a stop under way: the grace ends at once.
			if code, _, errOut := kiln(t, socket, "start", silent); code != 0 {
				t.Fatalf("start again: exit %d: %s", code, errOut)
			}
			if code, _, errOut := kiln(t, socket, "stop", silent); code != 0 {
				t.Fatalf("stop again: exit %d: %s", code, errOut)
			}
			start = time.Now()
			if code, _, errOut := kiln(t, socket, "stop", silent, "--force", "--wait", "--timeout", "60s"); code != 0 {
				t.Fatalf("stop --force of a stopping instance: exit %d: %s", code, errOut)
			}
			inst, err = c.Instance(ctx, silent)
			if took := time.Since(start); err != nil || inst.State != "stopped" || !strings.HasSuffix(inst.StateReason, ": forced off when asked (--force)") || took > api.StopGrace-5*time.Second {
				t.Errorf("stop --force during a stop: after %s, state %q, reason %q, %v; want stopped at once, forced off when asked", took, inst.State, inst.StateReason, err)
			}
		})
		t.Run("create image", func(t *testing.T) {
			t.Parallel()
			// Each boot writes 32 MiB the guest has not written before, so that each
			// capture takes a while (the instance is stopped meanwhile).
			ud := filepath.Join(t.TempDir(), "user-data")
			os.WriteFile(ud, []byte("#!/bin/sh\ndd if=/dev/urandom of=/fill bs=1M count=32 2>/dev/null\nsync\n"), 0o644)
			code, out, errOut := kiln(t, socket, "run", "kiln-guest", "--type", "nano", "--user-data", ud, "--wait", "--timeout", "110s", "-q")
			id := strings.TrimSpace(out)
			if code != 0 {
				t.Fatalf("run --wait: exit %d: %s", code, errOut)
			}
			defer kiln(t, socket, "terminate", "--force", id)
			code, out, errOut = kiln(t, socket, "image", "create", id, "snap", "--wait", "--timeout", "110s", "-q")
			if code != 0 || !strings.HasPrefix(out, "ami-") {
				t.Fatalf("image create --wait: exit %d, %q: %s", code, out, errOut)
			}
			// Back where it was: ready again, on its second boot.
			inst, err := c.Instance(ctx, id)
			con, _ := c.ConsoleText(ctx, id)
			if err != nil || inst.State != "running" || !inst.Ready || strings.Count(con, "KILN-GUEST ready") != 2 {
				t.Errorf("after image create --wait: %+v, %v\n%s", inst, err, con)
			}
			// reboot --wait returns once the guest is ready again: a third boot.
			if code, _, errOut := kiln(t, socket, "reboot", id, "--wait", "--timeout", "90s"); code != 0 {
				t.Fatalf("reboot --wait: exit %d: %s", code, errOut)
			}
			inst, err = c.Instance(ctx, id)
			con, _ = c.ConsoleText(ctx, id)
			if err != nil || !inst.Ready || strings.Count(con, "KILN-GUEST ready") != 3 {
				t.Errorf("after reboot --wait: %+v, %v\n%s", inst, err, con)
			}

			// Ctrl-C while an image is made: kiln says so and exits 130; it is made all the
			// same, and the instance comes back.
			cmd, _, stderr, err := kilnProcess(ctx, socket, "image", "create", id, "snap2", "--wait", "--timeout", "110s")
			if err != nil {
				t.Fatal(err)
			}
			// Once the instance is stopping, kiln is waiting: the operation records that
			// (a DB write) as kilnd answers (a write to a Unix socket), so after it.
			var pending api.Image
			kilntest.Poll(t, time.Minute, "image snap2 pending, its instance stopping", func() bool {
				list, _ := c.Images(ctx, client.ListImagesOptions{Filters: []string{"name=snap2"}})
				inst, _ := c.Instance(ctx, id)
				if len(list) == 1 && list[0].State == "pending" && inst.State == "stopping" {
					pending = list[0]
					if inst.CreatingImage != pending.ID {
						t.Errorf("instance %s stopping for %s says it is creating image %q", id, pending.ID, inst.CreatingImage)
					}
					return true
				}
				return false
			}, evidence)
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			t.Logf("image create --wait, Ctrl-C: exit %d\n%s", cmd.ProcessState.ExitCode(), stderr)
			if code := cmd.ProcessState.ExitCode(); code != 130 {
				t.Errorf("exit %d after Ctrl-C; want 130", code)
			}
			if want := "kiln: " + pending.ID + " is still being created from " + id + "; kiln image inspect " + pending.ID; !strings.Contains(stderr.String(), want) {
				t.Errorf("stderr lacks %q", want)
			}
			// A wait for ready sees the instance through the capture (stopped, then
			// started again), and the image is made.
			if _, err := c.WaitInstance(ctx, id, "ready"); err != nil {
				t.Fatalf("the instance is not back after the image: %v", err)
			}
			if im, err := c.WaitImage(ctx, pending.ID, nil); err != nil || im.State != "available" {
				t.Errorf("after Ctrl-C: %s, %v; want the image made", im.State, err)
			}

			// A guest that answers the power button is not forced off.
			if code, _, errOut := kiln(t, socket, "stop", id, "--wait", "--timeout", "90s"); code != 0 {
				t.Fatalf("stop --wait: exit %d: %s", code, errOut)
			}
			if inst, err := c.Instance(ctx, id); err != nil || inst.State != "stopped" || strings.Contains(inst.StateReason, "forced") {
				t.Errorf("after a clean stop: state %q, reason %q, %v", inst.State, inst.StateReason, err)
			}
		})
	})
}

// TestWaitUsage: --timeout goes with --wait and is positive.
func TestWaitUsage(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{
		{"run", "kiln-guest", "--timeout", "5s"},
		{"run", "kiln-guest", "--wait", "--timeout", "0s"},
		{"stop", "i-1", "--wait", "--timeout", "-1s"},
		{"image", "copy", "a", "b", "--timeout", "1m"},
		{"start", "i-1", "--wait", "--timeout", "soon"},
	} {
		if code, _, errOut := kiln(t, socket, args...); code != 2 {
			t.Errorf("kiln %s: exit %d, want 2 (stderr %q)", strings.Join(args, " "), code, errOut)
		}
	}
}

// TestInterruptedAsksNothingMore: a stop, start, reboot or terminate of several
// instances asks kilnd nothing after a signal, and names the instances it did not ask.
// (No kilnd listens: a request would end in "cannot reach kilnd", exit 1.)
func TestInterruptedAsksNothingMore(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "none.sock")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(interrupted{syscall.SIGINT})
	var stdout, stderr strings.Builder
	code := run(ctx, []string{"--socket", socket, "stop", "i-1", "web", "--wait"}, &stdout, &stderr)
	if want := "kiln: interrupted (Ctrl-C): not asked: i-1 web\n"; code != 130 || stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("stop after Ctrl-C: exit %d, stdout %q, stderr %q; want 130 and %q", code, stdout.String(), stderr.String(), want)
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		text string
		n    int
		want []string
	}{
		{"", 3, nil},
		{"a\n\nb\r\n  \nc\x1b[0m\n", 2, []string{"b", "c[0m"}},
		{"one\ntwo\n", 5, []string{"one", "two"}},
	} {
		got := lastLines(tc.text, tc.n)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.text, tc.n, got, tc.want)
		}
	}
}
