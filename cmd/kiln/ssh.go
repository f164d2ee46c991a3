package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

func newSSHCommand(e *env) *cobra.Command {
	var o sshOptions
	cmd := &cobra.Command{
		Use:   "ssh INSTANCE [-- COMMAND...]",
		Short: "Log in to an instance with ssh (or run COMMAND there), its host key checked",
		Long: `Runs the system's ssh on the instance's SSH port, as the image's default user (or the
one cloud-init named), with the key pair's private key that key-pair create kept in
~/.ssh/kiln/ (or --identity). The guest's host keys are those its console showed at
its first boot; kiln keeps them in ~/.ssh/kiln/known_hosts.d/ and ssh checks them
(StrictHostKeyChecking=yes): a guest whose keys changed is refused.`,
		Args: minArgs(1, "INSTANCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := o.target(cmd.Context(), e, args[0])
			if err != nil {
				return err
			}
			argv := append(t.options("-p"), "-l", t.user, "127.0.0.1")
			if command := commandArgs(args[1:]); len(command) > 0 {
				argv = append(append(argv, "--"), command...)
			}
			return runTool(cmd.Context(), e, "ssh", argv)
		},
	}
	cmd.Flags().SetInterspersed(false) // what follows INSTANCE is the command's
	o.flags(cmd)
	return cmd
}

// commandArgs is the command after INSTANCE, without the "--" that may lead it.
func commandArgs(args []string) []string {
	if len(args) > 0 && args[0] == "--" {
		return args[1:]
	}
	return args
}

// sshOptions are the flags kiln ssh and kiln cp share.
type sshOptions struct {
	identity, user string
}

func (o *sshOptions) flags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.identity, "identity", "i", "", "private key file (default: ~/.ssh/kiln/KEYNAME, if key-pair create made it)")
	cmd.Flags().StringVarP(&o.user, "user", "l", "", "user to log in as (default: the image's, else the one cloud-init named)")
}

// sshTarget is how to reach an instance's sshd.
type sshTarget struct {
	id, user, identity, knownHosts string
	port                           int
}

// target looks the instance up and records its host keys in kiln's known_hosts.
func (o *sshOptions) target(ctx context.Context, e *env, ref string) (sshTarget, error) {
	inst, err := e.client().Instance(ctx, ref)
	if err != nil {
		return sshTarget{}, err
	}
	t := sshTarget{id: inst.ID, port: inst.SSHPort, user: o.user, identity: o.identity}
	switch {
	case inst.State == "terminated" || inst.State == "shutting-down":
		return t, fmt.Errorf("instance %s is %s: run a new one (kiln run)", inst.ID, inst.State)
	case inst.State != "running":
		return t, fmt.Errorf("instance %s is %s: start it first (kiln start %s)", inst.ID, inst.State, ref)
	case inst.SSHPort == 0:
		return t, fmt.Errorf("instance %s has no SSH port (it was launched before instances had a network): launch a new one", inst.ID)
	case len(inst.SSHHostKeys) == 0:
		return t, fmt.Errorf("instance %s: its guest has not shown its SSH host keys on the console yet (cloud-init prints them at the end of the first boot), so its sshd cannot be checked; wait until it is ready (kiln instance inspect %s says Ready: true; kiln run --wait and kiln start --wait wait for that)", inst.ID, ref)
	}
	if t.user == "" {
		t.user = inst.SSHUser
	}
	if t.user == "" {
		return t, usageError{fmt.Errorf("instance %s: no user to log in as (its image names none, and cloud-init named none on the console): give --user", inst.ID)}
	}
	if t.identity == "" && inst.KeyName != "" {
		if path, err := keyFile(inst.KeyName); err == nil {
			if _, err := os.Stat(path); err == nil {
				t.identity = path
			}
		}
	}
	if t.identity != "" {
		if _, err := os.Stat(t.identity); err != nil {
			return t, fmt.Errorf("--identity: %w", err)
		}
	}
	if t.knownHosts, err = recordHostKeys(inst); err != nil {
		return t, fmt.Errorf("record the guest's host keys: %w", err)
	}
	return t, nil
}

// options are ssh's (and scp's) options for the target; portFlag is -p for ssh, -P for scp.
func (t sshTarget) options(portFlag string) []string {
	argv := []string{portFlag, strconv.Itoa(t.port),
		"-o", "HostKeyAlias=" + t.id,
		"-o", "UserKnownHostsFile=" + sshQuote(t.knownHosts),
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "CheckHostIP=no",
		"-o", "UpdateHostKeys=no",
	}
	if t.identity != "" {
		argv = append(argv, "-i", t.identity, "-o", "IdentitiesOnly=yes")
	}
	return argv
}

// sshQuote quotes a file name for an ssh option, which ssh splits at spaces outside quotes.
func sshQuote(s string) string {
	if strings.ContainsAny(s, " \t") {
		return `"` + s + `"`
	}
	return s
}

// recordHostKeys writes the instance's host keys, under its id (ssh's HostKeyAlias),
// into a known_hosts file of its own, ~/.ssh/kiln/known_hosts.d/ID (replaced whole, so
// that kiln ssh to several instances at once never loses one's), and returns its path.
func recordHostKeys(inst api.Instance) (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(home, ".ssh", "kiln", "known_hosts.d")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if !strings.HasPrefix(inst.ID, "i-") || strings.ContainsAny(inst.ID, "/ ") {
		return "", fmt.Errorf("instance id %q: not an instance id", inst.ID)
	}
	path := filepath.Join(dir, inst.ID)
	var lines []string
	for _, k := range inst.SSHHostKeys {
		if strings.ContainsAny(k, "\n\r") {
			return "", fmt.Errorf("host key %.40q: not one line", k)
		}
		lines = append(lines, inst.ID+" "+k)
	}
	tmp, err := os.CreateTemp(dir, ".new.*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}

// runTool runs a program of the system's (ssh, scp) on kiln's terminal and ends kiln
// with its exit status. The program is killed if ctx ends (kiln's deadline, or a ^C
// that reached kiln: one typed in an interactive session is the guest's).
func runTool(ctx context.Context, e *env, name string, argv []string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("%s: %w (install openssh-client)", name, err)
	}
	cmd := exec.CommandContext(ctx, path, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, e.stdout, e.stderr
	err = cmd.Run()
	var xe *exec.ExitError
	if errors.As(err, &xe) && xe.ExitCode() > 0 {
		return exitError{code: xe.ExitCode()}
	}
	return err
}
