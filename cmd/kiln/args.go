package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// argsError is a wrong number of arguments, or an unknown command.
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

// subcommandArgs is the argument check of a command that groups others (kiln image): any
// argument is a command it does not have, refused with the nearest it has.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	cmd.SuggestionsMinimumDistance = 2 // edits; one for a short word ("rm" is not "ls")
	if len(args[0]) <= 3 {
		cmd.SuggestionsMinimumDistance = 1
	}
	if near := cmd.SuggestionsFor(args[0]); len(near) > 0 {
		for i, n := range near {
			near[i] = strconv.Quote(n)
		}
		msg += "; did you mean " + strings.Join(near, " or ") + "?"
	}
	return argsError{errors.New(msg)}
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
		k, v, err := cutKV(a)
		if err != nil {
			return nil, usageError{err}
		}
		out[k] = v
	}
	return out, nil
}

// cutKV splits one KEY=VALUE word.
func cutKV(s string) (k, v string, err error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("%q: want KEY=VALUE", s)
	}
	return k, v, nil
}
