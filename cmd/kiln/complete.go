package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"kiln/daemon/client"
)

// completionDeadline bounds the questions a completion asks kilnd: a shell waits on it.
const completionDeadline = 2 * time.Second

// completer lists the names (and ids) a kind of argument may take, asking kilnd; each
// candidate may carry a description after a tab, which shells that can show it do.
type completer func(ctx context.Context, c *client.Client) ([]string, error)

// argCompleters complete the positional arguments a command's Use line names.
var argCompleters = map[string]completer{
	"IMAGE":    completeImages,
	"INSTANCE": completeInstances,
	"SNAPSHOT": completeSnapshots,
	"VOLUME":   completeVolumes,
	"KEY-PAIR": completeKeyPairs,
	"ACCESS-KEY": func(ctx context.Context, c *client.Client) ([]string, error) {
		list, err := c.AccessKeys(ctx)
		out := make([]string, len(list))
		for i, ak := range list {
			out[i] = ak.AccessKeyID + "\t" + ak.OwnerID
		}
		return out, err
	},
}

// flagCompleters complete the flags that take one of kiln's names or a fixed word.
var flagCompleters = map[string]completer{
	"type":            completeTypes,
	"key-name":        completeKeyPairs,
	"snapshot":        completeSnapshots,
	"output":          words("table", "json"),
	"metadata-tokens": words("optional", "required"),
	"boot-mode":       words("legacy-bios", "uefi"),
	"arch":            words("x86_64", "arm64"),
}

// addCompletions gives every command of the tree the completion of its arguments, by
// the words of its Use line (run IMAGE, attach VOLUME INSTANCE, stop INSTANCE...), and of
// the flags that take names (--key-name, --type, …). Files are completed by the shell.
func addCompletions(e *env, root *cobra.Command) {
	var walk func(cmd *cobra.Command)
	walk = func(cmd *cobra.Command) {
		if cmd.ValidArgsFunction == nil && !cmd.HasSubCommands() {
			if pos := positionals(cmd.Use); len(pos) > 0 {
				cmd.ValidArgsFunction = completeArgs(e, pos)
			}
		}
		cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			comp, ok := flagCompleters[f.Name]
			if f.Name == "type" && cmd.Parent() != nil && cmd.Parent().Name() == "key-pair" {
				comp, ok = words("ed25519", "rsa"), true
			}
			if ok {
				_ = cmd.RegisterFlagCompletionFunc(f.Name, complete(e, comp))
			}
		})
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
	_ = root.RegisterFlagCompletionFunc("output", complete(e, flagCompleters["output"]))
}

// positionals are the argument words of a Use line ("attach VOLUME INSTANCE [--device
// D]" gives VOLUME, INSTANCE; "stop INSTANCE..." gives INSTANCE...; "exec INSTANCE [--]
// COMMAND..." gives INSTANCE, COMMAND...), up to its first option or flag.
func positionals(use string) []string {
	var out []string
	for i, w := range strings.Fields(use) {
		switch {
		case i == 0 || w == "[--]":
		case strings.HasPrefix(w, "[") || strings.HasPrefix(w, "-"):
			return out
		default:
			out = append(out, w)
		}
	}
	return out
}

// completeArgs completes the argument at the position the words name; a word ending in
// "..." takes every argument from there on.
func completeArgs(e *env, words []string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		i := len(args)
		if last := words[len(words)-1]; i >= len(words) && strings.HasSuffix(last, "...") {
			i = len(words) - 1
		}
		if i >= len(words) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		word := strings.TrimSuffix(words[i], "...")
		comp, ok := argCompleters[word]
		switch {
		case !ok && (word == "COMMAND" || word == "FILE"):
			return nil, cobra.ShellCompDirectiveDefault // the shell's
		case !ok:
			return nil, cobra.ShellCompDirectiveNoFileComp // a new NAME, a K=V: nothing to offer
		}
		return complete(e, comp)(cmd, args, "")
	}
}

// complete asks kilnd, within completionDeadline; a kilnd that does not answer completes
// nothing, quietly, as shells expect.
func complete(e *env, comp completer) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(cmd.Context(), completionDeadline)
		defer cancel()
		out, err := comp(ctx, e.client())
		if err != nil {
			cobra.CompDebugln(fmt.Sprintf("kiln completion: %v", err), true)
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func words(w ...string) completer {
	return func(context.Context, *client.Client) ([]string, error) { return w, nil }
}

// named gives a resource's name and its id, each described by the other: either is a
// valid argument.
func named(out []string, id, name, what string) []string {
	if name != "" {
		out = append(out, cobra.CompletionWithDesc(name, id+" "+what))
	}
	return append(out, cobra.CompletionWithDesc(id, strings.TrimSpace(name+" "+what)))
}

func completeImages(ctx context.Context, c *client.Client) ([]string, error) {
	list, err := c.Images(ctx, client.ListImagesOptions{})
	var out []string
	for _, im := range list {
		out = named(out, im.ID, im.Name, im.State)
	}
	return out, err
}

func completeInstances(ctx context.Context, c *client.Client) ([]string, error) {
	list, err := c.Instances(ctx, false)
	var out []string
	for _, inst := range list {
		out = named(out, inst.ID, inst.Name, inst.State)
	}
	return out, err
}

func completeSnapshots(ctx context.Context, c *client.Client) ([]string, error) {
	list, err := c.Snapshots(ctx)
	var out []string
	for _, sn := range list {
		out = named(out, sn.ID, "", humanBytes(sn.VolumeSize<<30))
	}
	return out, err
}

func completeVolumes(ctx context.Context, c *client.Client) ([]string, error) {
	list, err := c.Volumes(ctx)
	var out []string
	for _, v := range list {
		out = named(out, v.ID, "", v.State)
	}
	return out, err
}

func completeKeyPairs(ctx context.Context, c *client.Client) ([]string, error) {
	list, err := c.KeyPairs(ctx)
	var out []string
	for _, kp := range list {
		out = append(out, cobra.CompletionWithDesc(kp.KeyName, kp.KeyPairID))
	}
	return out, err
}

func completeTypes(ctx context.Context, c *client.Client) ([]string, error) {
	info, err := c.Info(ctx)
	var out []string
	for _, t := range info.InstanceTypes {
		out = append(out, cobra.CompletionWithDesc(t.Name, fmt.Sprintf("%d vCPU, %d MiB", t.CPUs, t.MemoryMiB)))
	}
	return out, err
}
