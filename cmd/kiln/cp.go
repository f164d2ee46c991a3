package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newCpCommand(e *env) *cobra.Command {
	var o sshOptions
	var recursive bool
	cmd := &cobra.Command{
		Use:   "cp [-r] SRC... DST",
		Short: "Copy files to or from an instance with scp (INSTANCE:PATH names the instance's side)",
		Long: `Copies files with the system's scp, as kiln ssh logs in: either every SRC is local and
DST is INSTANCE:PATH, or SRC is INSTANCE:PATH and DST is local. A local path with a
colon in it is written with a slash before it (./a:b).`,
		Args: minArgs(2, "SRC... DST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, paths, err := copySides(args)
			if err != nil {
				return usageError{err}
			}
			t, err := o.target(cmd.Context(), e, ref)
			if err != nil {
				return err
			}
			argv := t.options("-P")
			if recursive {
				argv = append(argv, "-r")
			}
			argv = append(argv, "--")
			for i, p := range paths {
				if p.remote {
					paths[i].path = t.user + "@127.0.0.1:" + p.path
				}
				argv = append(argv, paths[i].path)
			}
			return runTool(cmd.Context(), e, "scp", argv)
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "copy directories whole")
	o.flags(cmd)
	return cmd
}

// copyPath is one argument of kiln cp: a local path or a path in the instance.
type copyPath struct {
	path   string
	remote bool
}

// copySides splits cp's arguments: the instance they name and each path, checking that
// the copy goes one way (local sources to the instance, or the instance to local).
func copySides(args []string) (string, []copyPath, error) {
	var ref string
	paths := make([]copyPath, len(args))
	for i, a := range args {
		name, path, ok := strings.Cut(a, ":")
		if !ok || name == "" || strings.Contains(name, "/") {
			paths[i] = copyPath{path: a}
			continue
		}
		if ref != "" && name != ref {
			return "", nil, fmt.Errorf("%s and %s: a copy names one instance", ref, name)
		}
		if path == "" {
			path = "."
		}
		ref, paths[i] = name, copyPath{path: path, remote: true}
	}
	last := len(paths) - 1
	switch {
	case ref == "":
		return "", nil, fmt.Errorf("no INSTANCE:PATH: one side of a copy is the instance's")
	case paths[last].remote:
		for _, p := range paths[:last] {
			if p.remote {
				return "", nil, fmt.Errorf("%s: copy from the instance to a local path, or from local paths to the instance", p.path)
			}
		}
	case len(paths) != 2 || !paths[0].remote:
		return "", nil, fmt.Errorf("copy from one INSTANCE:PATH to a local path, or from local paths to INSTANCE:PATH")
	}
	return ref, paths, nil
}
