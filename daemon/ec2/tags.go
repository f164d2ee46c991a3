package ec2

import (
	"net/url"
	"slices"
	"strings"

	"kiln/daemon/api"
	kfilter "kiln/internal/filter"
)

// taggable are the kinds of resources that take tags: the id's prefix, the API's path,
// EC2's resource type and its Malformed code.
var taggable = []struct{ prefix, path, resourceType string }{
	{"ami", "/images", "image"},
	{"i", "/instances", "instance"},
	{"vol", "/volumes", "volume"},
	{"snap", "/snapshots", "snapshot"},
	{"key", "/key-pairs", "key-pair"},
}

// resourcePath is the API path of the resource an id names.
func resourcePath(id string) (string, *Error) {
	prefix, _, _ := strings.Cut(id, "-")
	for _, t := range taggable {
		if t.prefix == prefix && validID(prefix, id) {
			return t.path + "/" + id, nil
		}
	}
	return "", errorf("InvalidID", "The ID '%s' is not valid: kiln tags images (ami-), instances (i-), volumes (vol-), snapshots (snap-) and key pairs (key-)", clip(id))
}

// resource is a resource a request names: its API path, and its tags as they were when
// it was checked.
type resource struct {
	path string
	tags map[string]string
}

func createTags(c *call) (answer, *Error) {
	res := c.p.values("ResourceId")
	if len(res) == 0 {
		return nil, errorf(codeMissingParameter, "The request must contain the parameter ResourceId")
	}
	tags, e := c.p.tags("Tag")
	if e != nil {
		return nil, e
	}
	if len(tags) == 0 {
		return nil, errorf(codeMissingParameter, "The request must contain the parameter Tag")
	}
	rs, e := c.resources(res)
	if e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	for _, r := range rs {
		if err := c.s.kiln.Call(c.ctx, "POST", r.path+"/tags", nil, api.TagRequest{Tags: tags}, nil); err != nil {
			return nil, fromAPI(err, false)
		}
	}
	return ok()
}

func deleteTags(c *call) (answer, *Error) {
	res := c.p.values("ResourceId")
	if len(res) == 0 {
		return nil, errorf(codeMissingParameter, "The request must contain the parameter ResourceId")
	}
	rs, e := c.resources(res)
	if e != nil {
		return nil, e
	}
	given := c.p.indexed("Tag")
	if c.dry {
		return c.dryRun()
	}
	for _, r := range rs {
		var keys []string
		for k, v := range r.tags {
			// No Tag: all of them. A Tag with a Value: only when the value is that.
			if len(given) == 0 || slices.ContainsFunc(given, func(t params) bool {
				val, hasValue := t["Value"]
				return t["Key"] == k && (!hasValue || val == v)
			}) {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			continue
		}
		if err := c.s.kiln.Call(c.ctx, "POST", r.path+"/untag", nil, api.UntagRequest{Keys: keys}, nil); err != nil {
			return nil, fromAPI(err, false)
		}
	}
	return ok()
}

// resources are the resources ids name, each checked to exist for the caller first.
func (c *call) resources(ids []string) ([]resource, *Error) {
	var rs []resource
	for _, id := range ids {
		p, e := resourcePath(id)
		if e != nil {
			return nil, e
		}
		// An image shared with the caller (or public) is seen but not the caller's to tag:
		// refused before anything is changed, so that a request changes all or nothing.
		var view struct {
			LaunchPermission *api.LaunchPermission `json:"launchPermission"`
			Tags             map[string]string     `json:"tags"`
		}
		if err := c.s.kiln.Call(c.ctx, "GET", p, nil, nil, &view); err != nil {
			e := fromAPI(err, false)
			if strings.HasSuffix(e.Code, ".NotFound") || e.Code == "InvalidID" {
				e.Message = "The ID '" + id + "' does not exist"
			}
			return nil, e
		}
		if strings.HasPrefix(id, "ami-") && view.LaunchPermission == nil {
			return nil, errorf(codeUnauthorizedOperation, "You are not authorized to perform this operation: image %s is not yours", id)
		}
		rs = append(rs, resource{path: p, tags: view.Tags})
	}
	return rs, nil
}

type tagDescription struct {
	Key          string            `xml:"key"`
	ResourceID   string            `xml:"resourceId"`
	ResourceType string            `xml:"resourceType"`
	Value        string            `xml:"value"`
	tags         map[string]string // all of the resource's, for tag:KEY and tag-key
}

// tagFields are DescribeTags' filters, on the tags themselves (key, value, resource-id,
// resource-type) and, as EC2's, the resource's other tags (tag:KEY, tag-key): kiln's
// filter syntax and wildcards.
var tagFields = &kfilter.Fields[tagDescription]{
	Keys: map[string]func(tagDescription) []string{
		"key":           func(td tagDescription) []string { return []string{td.Key} },
		"value":         func(td tagDescription) []string { return []string{td.Value} },
		"resource-id":   func(td tagDescription) []string { return []string{td.ResourceID} },
		"resource-type": func(td tagDescription) []string { return []string{td.ResourceType} },
	},
	Tags: func(td tagDescription) map[string]string { return td.tags },
}

type describeTagsResponse struct {
	meta
	Tags      list[tagDescription] `xml:"tagSet"`
	NextToken string               `xml:"nextToken,omitempty"`
}

// describeTags lists the tags of every resource the caller sees, filtered (tagFields).
func describeTags(c *call) (answer, *Error) {
	fs, e := c.p.filters()
	if e != nil {
		return nil, e
	}
	match, err := tagFields.Parse(kilnFilters(fs)["filter"])
	if err != nil {
		return nil, fromAPI(err, false)
	}
	if c.dry {
		return c.dryRun()
	}
	var all []tagDescription
	for _, t := range taggable {
		var list []struct {
			ID        string            `json:"id"`
			KeyPairID string            `json:"keyPairId"`
			Tags      map[string]string `json:"tags"`
		}
		q := url.Values{}
		switch t.resourceType {
		case "image":
			q.Set("include-deprecated", "true")
			q.Set("include-disabled", "true")
		case "instance":
			q.Set("all", "true")
		}
		if err := c.s.kiln.Call(c.ctx, "GET", t.path, q, nil, &list); err != nil {
			return nil, fromAPI(err, false)
		}
		for _, r := range list {
			id := r.ID
			if id == "" {
				id = r.KeyPairID
			}
			for k, v := range r.Tags {
				all = append(all, tagDescription{Key: k, ResourceID: id, ResourceType: t.resourceType, Value: v, tags: r.Tags})
			}
		}
	}
	all = slices.DeleteFunc(all, func(td tagDescription) bool { return !match.Match(td) })
	pg, next, e := page(c.p, all, func(td tagDescription) string { return td.ResourceID + "\x00" + td.Key }, 5, 1000)
	if e != nil {
		return nil, e
	}
	return &describeTagsResponse{Tags: list[tagDescription]{Items: append([]tagDescription{}, pg...)}, NextToken: next}, nil
}
