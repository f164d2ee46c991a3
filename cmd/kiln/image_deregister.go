package main

import (
	"github.com/spf13/cobra"

	"kiln/daemon/client"
)

func newImageDeregisterCommand(e *env) *cobra.Command {
	return newRemoveCommand(e, "deregister IMAGE...",
		"Deregister images: they can no longer be launched; 'kiln gc' frees their content",
		"IMAGE", (*client.Client).DeregisterImage)
}
