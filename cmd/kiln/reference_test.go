package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// referencePath is the command reference, from this package's directory.
const referencePath = "../../docs/cli.md"

// regenerate is how docs/cli.md is made again; the Makefile's docs target runs
// TestCLIReference with KILN_UPDATE_DOCS=1.
const regenerate = "make docs (KILN_UPDATE_DOCS=1 go test -run '^TestCLIReference$' ./cmd/kiln)"

// TestCLIReference: docs/cli.md is the reference made from kiln's command tree, byte
// for byte; with KILN_UPDATE_DOCS=1 the test writes it instead.
func TestCLIReference(t *testing.T) {
	got := reference(commandTree())
	if os.Getenv("KILN_UPDATE_DOCS") == "1" {
		if err := os.WriteFile(referencePath, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", referencePath)
		return
	}
	want, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatalf("%v: make it with %s", err, regenerate)
	}
	if got != string(want) {
		t.Fatalf("docs/cli.md is not the reference of kiln's commands as they are (first difference: %s); "+
			"make it again with %s and commit it", firstDiff(string(want), got), regenerate)
	}
}

// TestCLIReferenceIsStable: the reference does not depend on who makes it or where
// (the user, $KILN_SOCKET, $XDG_RUNTIME_DIR, $HOME), so that it is the same on every
// machine and TestCLIReference fails only when the tree changed.
func TestCLIReferenceIsStable(t *testing.T) {
	first := reference(commandTree())
	t.Setenv("KILN_SOCKET", "/tmp/elsewhere/kiln.sock")
	t.Setenv("XDG_RUNTIME_DIR", "/tmp/elsewhere")
	t.Setenv("HOME", "/tmp/elsewhere")
	second := reference(commandTree())
	if first != second {
		t.Fatalf("the reference changed with the environment: %s", firstDiff(first, second))
	}
	if strings.Contains(second, "/tmp/elsewhere") {
		t.Fatal("the reference shows a path of the environment it was made in")
	}
	for _, want := range []string{"## kiln image register\n", "## kiln ps\n", "--socket string", "(default \"table\")"} {
		if !strings.Contains(first, want) {
			t.Errorf("the reference has no %q", want)
		}
	}
}

// firstDiff describes where a and b first differ: the line number and both lines.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y || i >= len(al) || i >= len(bl) {
			return fmt.Sprintf("line %d is %q in the file, %q in the tree", i+1, x, y)
		}
	}
	return "none"
}

// commandTree is kiln's command tree as a user meets it: newRootCommand, plus the help
// and completion commands and the --help and --version flags cobra adds when it
// executes.
func commandTree() *cobra.Command {
	root := newRootCommand(&env{stdout: io.Discard, stderr: io.Discard})
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	root.InitDefaultVersionFlag()
	var help func(c *cobra.Command)
	help = func(c *cobra.Command) {
		c.InitDefaultHelpFlag()
		for _, sub := range c.Commands() {
			help(sub)
		}
	}
	help(root)
	return root
}

// reference is the Markdown command reference of the tree under root: a list of the
// commands, then a section for each (depth first, in cobra's order: by name) with its
// usage line, short and long text, subcommands and flags. The flags are shown as
// 'kiln CMD --help' shows them; -h/--help, which every command has, is left out.
func reference(root *cobra.Command) string {
	var cmds []*cobra.Command
	var walk func(c *cobra.Command, depth int)
	var toc strings.Builder
	walk = func(c *cobra.Command, depth int) {
		cmds = append(cmds, c)
		fmt.Fprintf(&toc, "%s- [%s](#%s)\n", strings.Repeat("  ", depth), c.CommandPath(), anchor(c))
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				walk(sub, depth+1)
			}
		}
	}
	walk(root, 0)

	var b strings.Builder
	name := root.Name()
	fmt.Fprintf(&b, "# %s command reference\n\n", name)
	fmt.Fprintf(&b, "<!-- Made from the command tree of cmd/%s: do not edit. After changing a command,\n", name)
	fmt.Fprintf(&b, "     run %s. -->\n\n", regenerate)
	fmt.Fprintf(&b, "Every command takes `-h`/`--help`, and the global flags of [`%s`](#%s). "+
		"Exit status: 0 on success, 1 when kilnd refuses or fails (its error code and a hint on "+
		"stderr) or a `--wait` gives up, 2 on a usage error, 130 on Ctrl-C.\n\n", name, anchor(root))
	b.WriteString(toc.String())
	for _, c := range cmds {
		section(&b, c)
	}
	return b.String()
}

// section writes one command's section.
func section(b *strings.Builder, c *cobra.Command) {
	fmt.Fprintf(b, "\n## %s\n\n", c.CommandPath())
	fmt.Fprintf(b, "%s\n\n", markdownText(strings.TrimSpace(c.Short)))
	b.WriteString("```\n")
	if c.Runnable() {
		fmt.Fprintf(b, "%s\n", c.UseLine())
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(b, "%s [command]\n", c.CommandPath())
	}
	b.WriteString("```\n")
	if len(c.Aliases) > 0 {
		var names []string
		for _, a := range c.Aliases {
			names = append(names, "`"+strings.TrimSpace(parentPath(c)+" "+a)+"`")
		}
		fmt.Fprintf(b, "\nAlso: %s.\n", strings.Join(names, ", "))
	}
	if long := strings.TrimSpace(c.Long); long != "" && long != strings.TrimSpace(c.Short) {
		fmt.Fprintf(b, "\n```text\n%s\n```\n", long)
	}
	if c.HasAvailableSubCommands() {
		b.WriteString("\nCommands:\n\n")
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				fmt.Fprintf(b, "- [`%s`](#%s): %s\n", sub.Name(), anchor(sub), markdownText(strings.TrimSpace(sub.Short)))
			}
		}
	}
	title := "Flags"
	if !c.HasParent() {
		title = "Global flags (every command takes them)"
	}
	flagBlock(b, title, c.NonInheritedFlags())
	// Flags a parent other than the root gives its subcommands (the root's are global).
	inherited := pflag.NewFlagSet("inherited", pflag.ContinueOnError)
	c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
		if c.Root().PersistentFlags().Lookup(f.Name) == nil {
			inherited.AddFlag(f)
		}
	})
	flagBlock(b, "Flags of "+parentPath(c), inherited)
}

// flagBlock writes the flags of fs but --help under title, as pflag prints them for
// --help, each default that depends on the environment given in words (docDefault).
func flagBlock(b *strings.Builder, title string, fs *pflag.FlagSet) {
	shown := pflag.NewFlagSet("shown", pflag.ContinueOnError)
	shown.SortFlags = true
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		if d := f.Annotations[docDefault]; len(d) == 1 {
			g := *f
			g.DefValue = d[0]
			f = &g
		}
		shown.AddFlag(f)
	})
	if !shown.HasFlags() {
		return
	}
	fmt.Fprintf(b, "\n%s:\n\n```text\n%s```\n", title, shown.FlagUsages())
}

func parentPath(c *cobra.Command) string {
	if c.HasParent() {
		return c.Parent().CommandPath()
	}
	return ""
}

// anchor is the id GitHub gives the heading of c's section: its path, lowercase, with
// spaces as hyphens ("kiln key-pair create" → kiln-key-pair-create).
func anchor(c *cobra.Command) string {
	return strings.ReplaceAll(strings.ToLower(c.CommandPath()), " ", "-")
}

// markdownText escapes the characters Markdown would read as markup in plain text.
func markdownText(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("\\`*_[]<>~", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestREADMECommands: every kiln command the README names in its code (code blocks
// and `code spans`: "kiln image ls -q", "kiln key-pair create|import") is one of the
// tree, with flags it has, and the README links the reference for the rest.
func TestREADMECommands(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	root := commandTree()
	refs := kilnCommands(string(readme))
	if len(refs) < 30 { // the tour alone names more: the extraction is broken
		t.Fatalf("found only %d kiln commands in README.md: %q", len(refs), refs)
	}
	for _, ref := range refs {
		if err := resolve(root, ref); err != nil {
			t.Errorf("README.md: %q: %v", ref, err)
		}
	}
	if !bytes.Contains(readme, []byte("(docs/cli.md)")) {
		t.Error("README.md does not link the command reference (docs/cli.md)")
	}
	if bytes.Contains(readme, []byte("../")) {
		t.Error("README.md names a file outside the repository (../)")
	}
}

// TestResolve: resolve tells a command of the tree, and its flags, from what is not.
func TestResolve(t *testing.T) {
	root := commandTree()
	for _, tc := range []struct {
		ref string
		ok  bool
	}{
		{"kiln image ls --filter 'name=w*' -q", true},
		{"kiln image list", true}, // an alias
		{"kiln run kiln-guest --name box --wait [--timeout D]", true},
		{"kiln key-pair create|import|ls|inspect|rm", true},
		{"kiln ssh web -- uname -a", true}, // after --, the guest's
		{"kiln exec INSTANCE [-e NAME=VALUE]... [-i] -- COMMAND...", true},
		{"kiln --socket PATH", true},
		{"kiln instance", true},
		{"kiln image frobnicate web", false},
		{"kiln key-pair create|frobnicate", false},
		{"kiln frobnicate", false},
		{"kiln run kiln-guest --frobnicate", false},
		{"kiln ps -z", false},
	} {
		if err := resolve(root, tc.ref); (err == nil) != tc.ok {
			t.Errorf("resolve(%q) = %v, want ok %v", tc.ref, err, tc.ok)
		}
	}
}

var (
	codeBlock = regexp.MustCompile("(?ms)^```[a-z]*\n(.*?)^```")
	codeSpan  = regexp.MustCompile("`([^`\n]+)`")
	// kiln at the start of the code, or after a prompt, a ;, a &&, a comment's # or a
	// "(" (not "what kiln needs"), up to the next ;, &, # or ).
	kilnRef = regexp.MustCompile(`(?:^|\$ |; |&& |# |\()(kiln(?: [^;&#)]*)?)`)
	// A command word is lowercase (alternatives with |); a flag is --name or -x.
	commandWord = regexp.MustCompile(`^[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*$`)
	flagWord    = regexp.MustCompile(`^(--[a-z][a-z0-9-]*|-[a-zA-Z])(=.*)?$`)
)

// kilnCommands is every "kiln WORD..." in the code of a Markdown text.
func kilnCommands(md string) []string {
	var code []string
	for _, m := range codeBlock.FindAllStringSubmatch(md, -1) {
		code = append(code, strings.Split(m[1], "\n")...)
	}
	prose := codeBlock.ReplaceAllString(md, "")
	for _, m := range codeSpan.FindAllStringSubmatch(prose, -1) {
		code = append(code, m[1])
	}
	var out []string
	for _, line := range code {
		for _, m := range kilnRef.FindAllStringSubmatch(line, -1) {
			out = append(out, strings.TrimSpace(m[1]))
		}
	}
	return out
}

// resolve checks that ref ("kiln image ls -q ...") names a command of the tree and
// flags it has. Its words name commands while they can: after a command that has
// subcommands, the next lowercase word is one of them (each of its |-alternatives); a
// command without subcommands takes the rest as arguments. Every --flag or -x (in
// [brackets] too) up to a bare -- is one of the command's.
func resolve(root *cobra.Command, ref string) error {
	words := strings.Fields(ref)
	if len(words) == 0 || words[0] != root.Name() {
		return fmt.Errorf("not a %s command", root.Name())
	}
	cmd, naming := root, true
	for _, w := range words[1:] {
		if w == "--" {
			break
		}
		if naming && commandWord.MatchString(w) && cmd.HasAvailableSubCommands() {
			var next *cobra.Command
			for _, alt := range strings.Split(w, "|") {
				if next = subcommand(cmd, alt); next == nil {
					return fmt.Errorf("%s has no command %q (its commands: %s)", cmd.CommandPath(), alt, subcommandNames(cmd))
				}
			}
			cmd = next
			continue
		}
		naming = false
		m := flagWord.FindStringSubmatch(strings.Trim(w, "[]."))
		if m == nil {
			continue
		}
		if name := strings.TrimPrefix(m[1], "--"); len(m[1]) > 2 && cmd.Flag(name) == nil {
			return fmt.Errorf("%s has no flag --%s", cmd.CommandPath(), name)
		} else if len(m[1]) == 2 && shorthand(cmd, m[1][1:]) == nil {
			return fmt.Errorf("%s has no flag %s", cmd.CommandPath(), m[1])
		}
	}
	return nil
}

// shorthand is c's flag (its own or inherited) of the one-letter name, or nil.
func shorthand(c *cobra.Command, name string) *pflag.Flag {
	if f := c.Flags().ShorthandLookup(name); f != nil {
		return f
	}
	return c.InheritedFlags().ShorthandLookup(name)
}

func subcommand(c *cobra.Command, name string) *cobra.Command {
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() && (sub.Name() == name || sub.HasAlias(name)) {
			return sub
		}
	}
	return nil
}

func subcommandNames(c *cobra.Command) string {
	var names []string
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	return strings.Join(names, ", ")
}
