package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

func newKeyPairCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key-pair",
		Short: "Create, import, list and remove SSH key pairs",
		Long: `SSH key pairs, as the cloud's: kiln run --key-name NAME gives the guest the pair's
public key (cloud-init's default user gets it). kilnd keeps public keys only.`,
		Args: subcommandArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newKeyPairCreateCommand(e), newKeyPairImportCommand(e), newKeyPairLsCommand(e),
		newKeyPairInspectCommand(e), newKeyPairRmCommand(e))
	return cmd
}

// keyFile is where key-pair create keeps the private key of NAME: ~/.ssh/kiln/NAME.
func keyFile(name string) (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".ssh", "kiln", name), nil
}

func printKeyPair(e *env, kp api.KeyPair) error {
	switch {
	case e.quiet:
		_, err := fmt.Fprintln(e.stdout, kp.KeyPairID)
		return err
	case e.output == "json":
		return printJSON(e.stdout, kp)
	}
	return fields(e.stdout, append([][2]string{{"ID", kp.KeyPairID}, {"Name", kp.KeyName}, {"Type", kp.KeyType},
		{"Fingerprint", kp.KeyFingerprint}, {"Owner", kp.OwnerID}, {"Created", kp.CreateTime.Local().Format("2006-01-02 15:04:05 MST")},
		{"Public key", kp.PublicKey}}, tagFields(kp.Tags)...))
}

func newKeyPairCreateCommand(e *env) *cobra.Command {
	var typ string
	var tags map[string]string
	cmd := &cobra.Command{
		Use:   "create NAME [--type ed25519|rsa] [--tag K=V]...",
		Short: "Make a key pair: prints its private key, and keeps it in ~/.ssh/kiln/NAME (mode 0600)",
		Args:  exactArgs(1, "one NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := keyFile(args[0])
			if err != nil {
				return err
			}
			if _, err := os.Lstat(path); err == nil {
				return fmt.Errorf("%s exists: a private key of that name is kept there; remove it or choose another name", path)
			}
			kp, err := e.client().CreateKeyPair(cmd.Context(), api.CreateKeyPairRequest{Name: args[0], Type: typ, Tags: tags})
			if err != nil {
				return err
			}
			if err := writePrivateKey(path, kp.KeyMaterial); err != nil {
				return fmt.Errorf("key pair %s made, but its private key could not be kept (%w); here it is, once:\n%s", kp.KeyName, err, kp.KeyMaterial)
			}
			if e.quiet || e.output == "json" {
				return printKeyPair(e, kp)
			}
			fmt.Fprintf(e.stderr, "key pair %s (%s, %s), its private key in %s:\n", kp.KeyName, kp.KeyPairID, kp.KeyFingerprint, path)
			_, err = fmt.Fprint(e.stdout, kp.KeyMaterial)
			return err
		},
	}
	cmd.Flags().StringVar(&typ, "type", "ed25519", "key type: ed25519 or rsa")
	cmd.Flags().Var(tagFlag{&tags}, "tag", "tag K=V (repeatable)")
	return cmd
}

// writePrivateKey writes a private key at path, mode 0600, its directory 0700, never over
// a file that is there.
func writePrivateKey(path, key string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(key)
	return errors.Join(err, f.Close())
}

func newKeyPairImportCommand(e *env) *cobra.Command {
	var file string
	var tags map[string]string
	cmd := &cobra.Command{
		Use:   "import NAME --public-key FILE [--tag K=V]...",
		Short: "Import a public key (a .pub file, or one line of authorized_keys)",
		Args:  exactArgs(1, "one NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usageError{errors.New("kiln key-pair import: give --public-key FILE")}
			}
			b, err := readFlagFile("--public-key", file, 16<<10)
			if err != nil {
				return err
			}
			kp, err := e.client().CreateKeyPair(cmd.Context(), api.CreateKeyPairRequest{Name: args[0], PublicKey: string(b), Tags: tags})
			if err != nil {
				return err
			}
			return printKeyPair(e, kp)
		},
	}
	cmd.Flags().StringVar(&file, "public-key", "", "the public key's FILE")
	cmd.Flags().Var(tagFlag{&tags}, "tag", "tag K=V (repeatable)")
	return cmd
}

// readFlagFile reads a small file a flag names; its errors name the flag.
func readFlagFile(flag, path string, max int64) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s %s is %s; at most %s", flag, path, humanBytes(st.Size()), humanBytes(max))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return b, nil
}

func newKeyPairLsCommand(e *env) *cobra.Command {
	var filters []string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List your key pairs",
		Long:    "List your key pairs (an administrator: everyone's).\n" + filterHelp("key-name", "key-pair-id", "fingerprint", "key-type"),
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := e.client().KeyPairs(cmd.Context(), filters...)
			if err != nil {
				return err
			}
			switch {
			case e.quiet:
				for _, kp := range list {
					fmt.Fprintln(e.stdout, kp.KeyPairID)
				}
				return nil
			case e.output == "json":
				return printJSON(e.stdout, list)
			}
			rows := make([][]string, len(list))
			for i, kp := range list {
				rows[i] = []string{kp.KeyName, kp.KeyPairID, kp.KeyType, kp.KeyFingerprint, ago(kp.CreateTime)}
			}
			return table(e.stdout, []string{"NAME", "KEY PAIR ID", "TYPE", "FINGERPRINT", "CREATED"}, rows)
		},
	}
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "filter KEY=VALUE (repeatable)")
	return cmd
}

func newKeyPairInspectCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect KEY-PAIR",
		Short: "Show a key pair (by name or id)",
		Args:  exactArgs(1, "one KEY-PAIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kp, err := e.client().KeyPair(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printKeyPair(e, kp)
		},
	}
}

func newKeyPairRmCommand(e *env) *cobra.Command {
	return newRemoveCommand(e, "rm KEY-PAIR...",
		"Remove key pairs (instances launched with one keep its key; ~/.ssh/kiln/ is left alone)", "KEY-PAIR", (*client.Client).DeleteKeyPair)
}
