package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// argsError is a wrong number of arguments.
type argsError struct{ error }

// exactArgs, minArgs: cobra's argument checks, with errors kiln reports as usage errors.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return argsError{fmt.Errorf("%s: want %s", cmd.CommandPath(), what)}
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return argsError{fmt.Errorf("%s: want %s", cmd.CommandPath(), what)}
		}
		return nil
	}
}

func isUnknownCommand(err error) bool {
	// cobra has no error type for an unknown command or flag.
	return strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") ||
		strings.HasPrefix(err.Error(), "unknown shorthand flag")
}

// parseKV splits KEY=VALUE arguments.
func parseKV(args []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("%q: want KEY=VALUE", a)}
		}
		out[k] = v
	}
	return out, nil
}
