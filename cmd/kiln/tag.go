package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

// taggable is a kind of resource kiln tag and kiln untag change, known by its id's
// prefix: tag and untag answer the resource as it is then.
type taggable struct {
	prefix string
	tag    func(c *client.Client, ctx context.Context, ref string, tags map[string]string) (any, error)
	untag  func(c *client.Client, ctx context.Context, ref string, keys []string) (any, error)
}

// taggables are the kinds, as EC2's CreateTags takes them: by id only.
var taggables = []taggable{
	{"ami-", asAny((*client.Client).TagImage), asAny((*client.Client).UntagImage)},
	{"i-", asAny((*client.Client).TagInstance), asAny((*client.Client).UntagInstance)},
	{"vol-", asAny((*client.Client).TagVolume), asAny((*client.Client).UntagVolume)},
	{"snap-", asAny((*client.Client).TagSnapshot), asAny((*client.Client).UntagSnapshot)},
	{"key-", asAny((*client.Client).TagKeyPair), asAny((*client.Client).UntagKeyPair)},
}

func asAny[T, A any](f func(*client.Client, context.Context, string, A) (T, error)) func(*client.Client, context.Context, string, A) (any, error) {
	return func(c *client.Client, ctx context.Context, ref string, a A) (any, error) { return f(c, ctx, ref, a) }
}

// taggableOf is the kind of the resource id (or start of one) ref names: its prefix
// and at least one hex digit.
func taggableOf(ref string) (taggable, bool) {
	for _, t := range taggables {
		if rest, ok := strings.CutPrefix(ref, t.prefix); ok && rest != "" && strings.Trim(rest, "0123456789abcdef") == "" {
			return t, true
		}
	}
	return taggable{}, false
}

// idOf is the id of a resource tag or untag answered.
func idOf(v any) string {
	switch r := v.(type) {
	case api.Image:
		return r.ID
	case api.Instance:
		return r.ID
	case api.Volume:
		return r.ID
	case api.Snapshot:
		return r.ID
	case api.KeyPair:
		return r.KeyPairID
	}
	return ""
}

const tagResources = `RESOURCE is an id, or the start of one (as kiln ps shows it), of an image (ami-),
instance (i-), volume (vol-), snapshot (snap-) or key pair (key-); several may be given
at once, of any kinds, as EC2's create-tags takes them. Each is changed in turn: a
failure is said as it comes and the others still go ahead. Only the owner (or an
administrator) may change a resource's tags. A tag key is 1 to 128 characters, a value
at most 256; keys beginning with "kiln:" are kiln's own; a resource has at most 50 tags.`

func newTagCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "tag RESOURCE... K=V...",
		Short: "Add or replace tags on images, instances, volumes, snapshots and key pairs",
		Long: `Add or replace tags on resources: the arguments before the first K=V name them.

` + tagResources + `

Tags at creation: kiln run, kiln volume create, kiln key-pair create|import and kiln
image register|create|import|pull take --tag K=V; kiln image create --snapshot-tag K=V
tags the snapshots it makes. Every ls takes --filter tag:K=PATTERN and tag-key=PATTERN.`,
		Args: minArgs(2, "at least one RESOURCE and one K=V"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := slices.IndexFunc(args, func(a string) bool { return strings.Contains(a, "=") })
			if n < 1 {
				return usageError{fmt.Errorf("kiln tag: want RESOURCE... K=V... (a resource id first, then tags)")}
			}
			tags, err := parseKV(args[n:])
			if err != nil {
				return err
			}
			return retagEach(e, cmd.Context(), args[:n], "tagged "+strings.Join(kvList(tags), " "), func(t taggable, c *client.Client, ref string) (any, error) {
				return t.tag(c, cmd.Context(), ref, tags)
			})
		},
	}
}

func newUntagCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "untag RESOURCE... K...",
		Short: "Remove tags from images, instances, volumes, snapshots and key pairs",
		Long: `Remove tag keys from resources (a key a resource does not have is no error, as in
EC2): the leading arguments that are resource ids name the resources, the rest are keys
(so a key that looks like a resource id cannot be given here; the API takes any).

` + tagResources,
		Args: minArgs(2, "at least one RESOURCE and one tag key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := slices.IndexFunc(args, func(a string) bool { _, ok := taggableOf(a); return !ok })
			if n < 1 {
				return usageError{fmt.Errorf("kiln untag: want RESOURCE... K... (resource ids first, then tag keys)")}
			}
			keys := args[n:]
			return retagEach(e, cmd.Context(), args[:n], "untagged "+strings.Join(keys, " "), func(t taggable, c *client.Client, ref string) (any, error) {
				return t.untag(c, cmd.Context(), ref, keys)
			})
		},
	}
}

// retagEach applies change to each resource in turn, saying what it did (-q: the id;
// -o json: the resources as they are then); a failure is said as it comes and the
// others still go ahead, as kiln rm does.
func retagEach(e *env, ctx context.Context, refs []string, did string, change func(t taggable, c *client.Client, ref string) (any, error)) error {
	kinds := make([]taggable, len(refs))
	for i, ref := range refs {
		var ok bool
		if kinds[i], ok = taggableOf(ref); !ok {
			return usageError{fmt.Errorf("%q is not a resource id: give the id (or its start) of an image (ami-), instance (i-), volume (vol-), snapshot (snap-) or key pair (key-)", ref)}
		}
	}
	c := e.client()
	var last error
	done := []any{}
	for i, ref := range refs {
		v, err := change(kinds[i], c, ref)
		if err != nil {
			if last != nil {
				reportError(e.stderr, last)
			}
			last = err
			continue
		}
		done = append(done, v)
		switch {
		case e.quiet:
			fmt.Fprintln(e.stdout, idOf(v))
		case e.output != "json":
			fmt.Fprintf(e.stdout, "%s: %s\n", idOf(v), clean(did))
		}
	}
	if e.output == "json" && !e.quiet {
		if err := printJSON(e.stdout, done); err != nil {
			return err
		}
	}
	return last
}

// tagFlag is a repeatable K=V flag (--tag, --snapshot-tag) that fills a map of tags as
// it is parsed.
type tagFlag struct{ tags *map[string]string }

func (f tagFlag) Set(s string) error {
	k, v, err := cutKV(s)
	if err != nil {
		return err
	}
	if *f.tags == nil {
		*f.tags = map[string]string{}
	}
	(*f.tags)[k] = v
	return nil
}

func (f tagFlag) String() string {
	if f.tags == nil {
		return ""
	}
	return strings.Join(kvList(*f.tags), ",")
}

// kvList is tags as K=V words, by key.
func kvList(tags map[string]string) []string {
	kv := make([]string, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		kv = append(kv, k+"="+tags[k])
	}
	return kv
}

func (tagFlag) Type() string { return "K=V" }

// tagFields are an inspect's lines of tags ("Tag K", V), by key.
func tagFields(tags map[string]string) [][2]string {
	var kv [][2]string
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		kv = append(kv, [2]string{"Tag " + k, tags[k]})
	}
	return kv
}

// filterHelp is the long help of an ls that takes --filter, naming its keys.
func filterHelp(keys ...string) string {
	keys = append(keys, "tag:KEY (the value of tag KEY)", "tag-key (a key it has)")
	out, line := "Filters (--filter KEY=VALUE; * and ? are wildcards; a key given twice matches either\nvalue, different keys must all match):\n", " "
	for i, k := range keys {
		if i < len(keys)-1 {
			k += ","
		}
		if len(line)+1+len(k) > 88 {
			out, line = out+line+"\n", " "
		}
		line += " " + k
	}
	return out + line
}
