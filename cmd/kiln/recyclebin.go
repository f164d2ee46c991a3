package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

func newRecycleBinCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "recycle-bin",
		Short: "List what the recycle bin keeps, and manage its retention rules",
		Long: `The recycle bin keeps deregistered images and deleted snapshots that one of your
retention rules matches, for the rule's retention: kiln image restore and kiln snapshot
restore bring them back; once their retention ends, the next kiln gc deletes them.`,
		Args: subcommandArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	rule := &cobra.Command{
		Use:   "rule",
		Short: "Create, list, inspect, unlock and delete retention rules",
		Args:  subcommandArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	rule.AddCommand(newRuleCreateCommand(e), newRuleLsCommand(e), newRuleInspectCommand(e), newRuleUnlockCommand(e),
		newRemoveCommand(e, "rm RULE...", "Delete retention rules (refused while locked)", "RULE", (*client.Client).DeleteRule))
	cmd.AddCommand(newRecycleBinLsCommand(e), rule)
	return cmd
}

func newRecycleBinLsCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List your images and snapshots in the recycle bin",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin, err := e.client().RecycleBin(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case e.quiet:
				for _, im := range bin.Images {
					fmt.Fprintln(e.stdout, im.ID)
				}
				for _, sn := range bin.Snapshots {
					fmt.Fprintln(e.stdout, sn.ID)
				}
				return nil
			case e.output == "json":
				return printJSON(e.stdout, bin)
			}
			var rows [][]string
			for _, im := range bin.Images {
				rows = append(rows, []string{im.ID, im.Name, im.OwnerID, when(im.RecycleBinEnterTime), when(im.RecycleBinExitTime)})
			}
			for _, sn := range bin.Snapshots {
				rows = append(rows, []string{sn.ID, sn.Description, sn.OwnerID, when(sn.RecycleBinEnterTime), when(sn.RecycleBinExitTime)})
			}
			return table(e.stdout, []string{"ID", "NAME", "OWNER", "DELETED", "RESTORABLE UNTIL"}, rows)
		},
	}
}

func newRuleCreateCommand(e *env) *cobra.Command {
	var req api.CreateRuleRequest
	var retention, lock string
	var tags []string
	cmd := &cobra.Command{
		Use:   "create --resource image|snapshot --retention DAYS [--tag K[=V]]... [--lock DAYS] [--description TEXT]",
		Short: "Create a retention rule: your deregistered images (deleted snapshots) it matches stay restorable",
		Long: `Create a retention rule, as EC2's Recycle Bin has them: your images (or snapshots)
that it matches go to the recycle bin when deregistered (deleted) and stay restorable for
the retention (1d to 365d). Without --tag it matches all of them; with tags, those with
at least one of the tags (K=V, or K with any value). When several rules match, the
longest retention wins. --lock 7d (7d to 30d) locks a rule without tags: it cannot be
deleted until it is unlocked (kiln recycle-bin rule unlock) and that delay has passed.`,
		Args: exactArgs(0, "no arguments (flags only)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if req.RetentionDays, err = days(retention); err != nil {
				return usageError{fmt.Errorf("--retention %q: %w", retention, err)}
			}
			if lock != "" {
				if req.UnlockDelayDays, err = days(lock); err != nil {
					return usageError{fmt.Errorf("--lock %q: %w", lock, err)}
				}
			}
			for _, t := range tags {
				k, v, _ := strings.Cut(t, "=")
				req.ResourceTags = append(req.ResourceTags, api.ResourceTag{Key: k, Value: v})
			}
			rule, err := e.client().CreateRule(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printRule(e, rule)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.ResourceType, "resource", "", "image or snapshot")
	f.StringVar(&retention, "retention", "", "how long the bin keeps them: 1d to 365d")
	f.StringArrayVar(&tags, "tag", nil, "match resources with this tag, K=V or K (repeatable)")
	f.StringVar(&lock, "lock", "", "lock the rule with this unlock delay: 7d to 30d")
	f.StringVar(&req.Description, "description", "", "what the rule is for")
	return cmd
}

// days reads a whole number of days: 7d (or 7).
func days(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("want a whole number of days, such as 7d")
	}
	return n, nil
}

func printRule(e *env, r api.Rule) error {
	switch {
	case e.quiet:
		_, err := fmt.Fprintln(e.stdout, r.ID)
		return err
	case e.output == "json":
		return printJSON(e.stdout, r)
	}
	kv := [][2]string{{"ID", r.ID}, {"Owner", r.OwnerID}, {"Resource", r.ResourceType},
		{"Retention", fmt.Sprintf("%d days", r.RetentionDays)}, {"Matches", ruleTags(r)}, {"Lock", ruleLock(r)},
		{"Description", r.Description}, {"Created", when(r.CreateTime)}}
	return fields(e.stdout, kv)
}

func ruleTags(r api.Rule) string {
	if len(r.ResourceTags) == 0 {
		return "all your " + r.ResourceType + "s"
	}
	var out []string
	for _, t := range r.ResourceTags {
		if t.Value == "" {
			out = append(out, t.Key)
		} else {
			out = append(out, t.Key+"="+t.Value)
		}
	}
	return "tagged " + strings.Join(out, " or ")
}

func ruleLock(r api.Rule) string {
	switch r.LockState {
	case api.LockLocked:
		return fmt.Sprintf("locked (unlock delay %d days)", r.UnlockDelayDays)
	case api.LockPendingUnlock:
		return "unlocking, until " + when(*r.LockEndTime)
	}
	return r.LockState
}

func newRuleLsCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List your retention rules",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := e.client().Rules(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case e.quiet:
				for _, r := range list {
					fmt.Fprintln(e.stdout, r.ID)
				}
				return nil
			case e.output == "json":
				return printJSON(e.stdout, list)
			}
			rows := make([][]string, len(list))
			for i, r := range list {
				rows[i] = []string{r.ID, r.ResourceType, fmt.Sprintf("%dd", r.RetentionDays), ruleTags(r), ruleLock(r), r.OwnerID}
			}
			return table(e.stdout, []string{"RULE ID", "RESOURCE", "RETENTION", "MATCHES", "LOCK", "OWNER"}, rows)
		},
	}
}

func newRuleInspectCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect RULE",
		Short: "Show a retention rule",
		Args:  exactArgs(1, "one RULE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := e.client().Rule(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printRule(e, r)
		},
	}
}

func newRuleUnlockCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "unlock RULE",
		Short: "Unlock a locked rule: it can be deleted once its unlock delay has passed",
		Args:  exactArgs(1, "one RULE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := e.client().UnlockRule(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printRule(e, r)
		},
	}
}
