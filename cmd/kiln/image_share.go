package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
)

// newImageShareCommand makes "image share" (share true) or "image unshare".
func newImageShareCommand(e *env, share bool) *cobra.Command {
	var req api.ShareRequest
	use, short := "share", "Let users, groups or everyone launch an image"
	if !share {
		use, short = "unshare", "Stop users, groups or everyone launching an image (their instances go on)"
	}
	cmd := &cobra.Command{
		Use:   use + " IMAGE [--user USER]... [--group GROUP]... [--public]",
		Short: short,
		Long: short + `. Only the image's owner (or an administrator) changes who may
launch it; kiln image inspect shows the owner who does now.`,
		Args: exactArgs(1, "one IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(req.Users) == 0 && len(req.Groups) == 0 && !req.Public {
				return usageError{fmt.Errorf("kiln image %s: give --user USER, --group GROUP or --public", use)}
			}
			change := e.client().ShareImage
			if !share {
				change = e.client().UnshareImage
			}
			im, err := change(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			return confirmImage(e, im, launchers(im))
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&req.Users, "user", nil, "a Unix user (repeatable)")
	f.StringArrayVar(&req.Groups, "group", nil, "a Unix group (repeatable)")
	f.BoolVar(&req.Public, "public", false, "everyone")
	return cmd
}

// launchers says who may launch an image besides its owner.
func launchers(im api.Image) string {
	if im.Public {
		return "public: everyone may launch it"
	}
	if im.LaunchPermission == nil {
		return "shared as asked"
	}
	var who []string
	for _, u := range im.LaunchPermission.Users {
		who = append(who, "user "+u)
	}
	for _, g := range im.LaunchPermission.Groups {
		who = append(who, "group "+g)
	}
	if len(who) == 0 {
		return "private: only its owner may launch it"
	}
	return "shared with " + strings.Join(who, ", ")
}
