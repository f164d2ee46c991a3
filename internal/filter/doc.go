// Package filter is the cloud's filters over listings (DescribeImages, DescribeInstances,
// DescribeVolumes, ...): KEY=PATTERN terms, each kind of resource naming its own keys
// (Fields), tag:KEY and tag-key for every kind, * and ? as wildcards. Every listing of
// kiln (images, instances, volumes, snapshots, key pairs) parses and matches with it, so
// the syntax and its errors are the same everywhere. It imports kiln/internal/ids only.
package filter
