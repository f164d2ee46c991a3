package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"kiln/daemon/client"
)

func newAccessKeyCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "access-key",
		Short: "Create, list and remove access keys for kilnd's EC2 endpoint (aws CLI, SDKs)",
		Long: `Access keys sign requests to kilnd's EC2 endpoint (kilnd --ec2-listen) with Signature
Version 4, as the cloud's do: a request signed with one of yours acts as you, with the same
images, instances, launch permissions and quotas as kiln itself. A user has at most two.`,
		Args: subcommandArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newAccessKeyCreateCommand(e), newAccessKeyLsCommand(e), newRemoveCommand(e, "rm ACCESS-KEY...",
		"Remove access keys: requests signed with them fail from then on", "ACCESS-KEY", (*client.Client).DeleteAccessKey))
	return cmd
}

func newAccessKeyCreateCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "create",
		Short: "Make an access key: prints its id and secret, the secret this once",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ak, err := e.client().CreateAccessKey(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case e.quiet:
				_, err = fmt.Fprintln(e.stdout, ak.AccessKeyID)
				return err
			case e.output == "json":
				return printJSON(e.stdout, ak)
			}
			if err := fields(e.stdout, [][2]string{{"Access key id", ak.AccessKeyID}, {"Secret access key", ak.SecretAccessKey}}); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "The secret is shown this once. To use it with the aws CLI:\n"+
				"  aws configure set aws_access_key_id %s --profile kiln\n"+
				"  aws configure set aws_secret_access_key SECRET --profile kiln\n"+
				"  aws --profile kiln --region REGION --endpoint-url http://127.0.0.1:8773 ec2 describe-images\n"+
				"(REGION and the endpoint: kiln info)\n", ak.AccessKeyID)
			return nil
		},
	}
}

func newAccessKeyLsCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List your access keys (an administrator: everyone's), without their secrets",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := e.client().AccessKeys(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case e.quiet:
				for _, ak := range list {
					fmt.Fprintln(e.stdout, ak.AccessKeyID)
				}
				return nil
			case e.output == "json":
				return printJSON(e.stdout, list)
			}
			rows := make([][]string, len(list))
			for i, ak := range list {
				rows[i] = []string{ak.AccessKeyID, ak.OwnerID, ago(ak.CreateTime)}
			}
			return table(e.stdout, []string{"ACCESS KEY ID", "OWNER", "CREATED"}, rows)
		},
	}
}
