package imds

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

// versions are the metadata versions EC2 lists at /, oldest first (EC2 User Guide,
// "Retrieve instance metadata"); each answers as latest does, so that a client asking
// for the version it knows (cloud-init asks for 2009-04-04 and later ones) finds it.
var versions = []string{
	"1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
	"2008-02-01", "2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01", "2012-01-12",
	"2014-02-25", "2014-11-05", "2015-10-20", "2016-04-19", "2016-06-30", "2016-09-02",
	"2018-03-28", "2018-08-17", "2018-09-24", "2019-10-01", "2020-10-27", "2021-01-03",
	"2021-03-23", "latest",
}

func isVersion(s string) bool { return slices.Contains(versions, s) }

// identityVersion is the version of the identity document's format EC2 gives.
const identityVersion = "2017-09-30"

// node is a path of the tree: a leaf's value, or a directory's entries.
type node struct {
	value   []byte
	ctype   string  // a leaf's content type: text/plain unless set
	entries []entry // a directory's, in listing order; nil for a leaf
}

// entry is a directory's child.
type entry struct {
	name  string // its path segment
	label string // its line in the listing when not the name (and / for a directory)
	node  *node
}

func leaf(value string) *node { return &node{value: []byte(value)} }

// dir is a directory of the entries whose node is not nil: an empty one is nil, as
// EC2 lists no category it has nothing in.
func dir(entries ...entry) *node {
	var kept []entry
	for _, e := range entries {
		if e.node != nil {
			kept = append(kept, e)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	return &node{entries: kept}
}

// text is a leaf of value, or nil (not there) when value is empty.
func text(value string) *node {
	if value == "" {
		return nil
	}
	return leaf(value)
}

// answer is a leaf's value, or a directory's listing: one entry a line, a directory's
// name ending in /, no line feed after the last (as EC2's).
func (n *node) answer() ([]byte, string) {
	if n.entries == nil {
		if n.ctype != "" {
			return n.value, n.ctype
		}
		return n.value, "text/plain"
	}
	lines := make([]string, len(n.entries))
	for i, e := range n.entries {
		switch {
		case e.label != "":
			lines[i] = e.label
		case e.node.entries != nil:
			lines[i] = e.name + "/"
		default:
			lines[i] = e.name
		}
	}
	return []byte(strings.Join(lines, "\n")), "text/plain"
}

// split is a request's path as segments: "/" is none; one / at the end is a
// directory's and is dropped; an empty segment (//) is no path of the tree.
func split(path string) ([]string, bool) {
	rest, ok := strings.CutPrefix(path, "/")
	if !ok {
		return nil, false
	}
	if rest == "" {
		return nil, true
	}
	segs := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	if slices.Contains(segs, "") {
		return nil, false
	}
	return segs, true
}

// find walks segs down from n.
func find(n *node, segs []string) (*node, bool) {
	for _, s := range segs {
		if n == nil {
			return nil, false
		}
		i := slices.IndexFunc(n.entries, func(e entry) bool { return e.name == s })
		if i < 0 {
			return nil, false
		}
		n = n.entries[i].node
	}
	return n, n != nil
}

// root is the tree the server answers inst with: the versions at /, each version's
// dynamic, meta-data and user-data beneath.
func (s *Server) root(inst Instance) *node {
	version := versionTree(inst, s.zone)
	entries := make([]entry, len(versions))
	for i, v := range versions {
		entries[i] = entry{name: v, label: v, node: version}
	}
	return &node{entries: entries}
}

func versionTree(inst Instance, zone string) *node {
	region := regionOf(zone)
	var userData *node
	if len(inst.UserData) > 0 {
		userData = &node{value: inst.UserData, ctype: "application/octet-stream"}
	}
	meta := dir(
		entry{name: "ami-id", node: text(inst.ImageID)},
		entry{name: "block-device-mapping", node: blockDeviceMapping(inst.BlockDeviceMappings)},
		entry{name: "hostname", node: text(inst.Hostname)},
		entry{name: "instance-id", node: text(inst.ID)},
		entry{name: "instance-type", node: text(inst.InstanceType)},
		entry{name: "local-hostname", node: text(inst.Hostname)},
		entry{name: "local-ipv4", node: text(inst.LocalIPv4)},
		entry{name: "mac", node: text(inst.MAC)},
		entry{name: "placement", node: dir(
			entry{name: "availability-zone", node: text(zone)},
			entry{name: "region", node: text(region)},
		)},
		entry{name: "public-keys", node: publicKeys(inst.PublicKeys)},
		entry{name: "reservation-id", node: text(inst.ReservationID)},
	)
	dynamic := dir(entry{name: "instance-identity", node: dir(
		entry{name: "document", node: identity(inst, zone, region)},
	)})
	// At a version's level EC2 lists its three without a /.
	return dir(
		entry{name: "dynamic", label: "dynamic", node: dynamic},
		entry{name: "meta-data", label: "meta-data", node: meta},
		entry{name: "user-data", label: "user-data", node: userData},
	)
}

// publicKeys is public-keys/: 0=NAME, 1=NAME … in the names' order, each index a
// directory of its one format, openssh-key. A name or key of more than one line is
// left out: it would break the listing (or the key).
func publicKeys(keys map[string]string) *node {
	var entries []entry
	for _, name := range sortedKeys(keys) {
		key := keys[name]
		if name == "" || key == "" || strings.ContainsAny(name, "\r\n") || strings.ContainsAny(strings.TrimRight(key, "\n"), "\r\n") {
			continue
		}
		i := strconv.Itoa(len(entries))
		entries = append(entries, entry{name: i, label: i + "=" + name, node: dir(entry{name: "openssh-key", node: leaf(key)})})
	}
	return dir(entries...)
}

// blockDeviceMapping is block-device-mapping/: each name (ami, root, ebs1 …) to its
// device, in the names' order; a name that cannot be one segment of a path is left
// out.
func blockDeviceMapping(devices map[string]string) *node {
	var entries []entry
	for _, name := range sortedKeys(devices) {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\r\n") {
			continue
		}
		entries = append(entries, entry{name: name, node: text(devices[name])})
	}
	return dir(entries...)
}

// identity is the instance identity document, EC2's fields that kiln has.
func identity(inst Instance, zone, region string) *node {
	doc := struct {
		AccountID        string `json:"accountId,omitempty"`
		Architecture     string `json:"architecture"`
		AvailabilityZone string `json:"availabilityZone"`
		ImageID          string `json:"imageId"`
		InstanceID       string `json:"instanceId"`
		InstanceType     string `json:"instanceType"`
		PendingTime      string `json:"pendingTime,omitempty"`
		PrivateIP        string `json:"privateIp,omitempty"`
		Region           string `json:"region"`
		Version          string `json:"version"`
	}{
		AccountID:        inst.AccountID,
		Architecture:     inst.Architecture,
		AvailabilityZone: zone,
		ImageID:          inst.ImageID,
		InstanceID:       inst.ID,
		InstanceType:     inst.InstanceType,
		PrivateIP:        inst.LocalIPv4,
		Region:           region,
		Version:          identityVersion,
	}
	if doc.Architecture == "" {
		doc.Architecture = "x86_64"
	}
	if !inst.LaunchTime.IsZero() {
		doc.PendingTime = inst.LaunchTime.UTC().Format(time.RFC3339)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		panic(err) // strings only
	}
	return &node{value: b}
}

// regionOf is a zone's region, as EC2 names them: the zone less its letter
// (us-east-1a: us-east-1); a zone not of that form is its own region.
func regionOf(zone string) string {
	if n := len(zone); n >= 2 && zone[n-1] >= 'a' && zone[n-1] <= 'z' && zone[n-2] >= '0' && zone[n-2] <= '9' {
		return zone[:n-1]
	}
	return zone
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
