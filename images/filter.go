package images

import (
	"strconv"

	"kiln/internal/filter"
)

// imageFields are the filters over images, with the cloud's spelling (DescribeImages).
var imageFields = &filter.Fields[*Image]{Tags: func(im *Image) map[string]string { return im.Tags }, Keys: map[string]func(*Image) []string{
	"name":             func(im *Image) []string { return []string{im.Name} },
	"image-id":         func(im *Image) []string { return []string{im.ID} },
	"state":            func(im *Image) []string { return []string{string(im.State)} },
	"architecture":     func(im *Image) []string { return []string{im.Architecture} },
	"owner-id":         func(im *Image) []string { return []string{im.OwnerID} },
	"root-device-type": func(im *Image) []string { return []string{im.RootDeviceType} },
	"root-device-name": func(im *Image) []string { return []string{im.RootDeviceName} },
	"boot-mode":        func(im *Image) []string { return []string{im.BootMode} },
	"is-public":        func(im *Image) []string { return []string{strconv.FormatBool(im.Public)} },
	"description":      func(im *Image) []string { return []string{im.Description} },
	"block-device-mapping.snapshot-id": func(im *Image) []string {
		var ids []string
		for _, m := range im.BlockDeviceMappings {
			if m.EBS != nil {
				ids = append(ids, m.EBS.SnapshotID)
			}
		}
		return ids
	},
	"block-device-mapping.device-name": func(im *Image) []string {
		var names []string
		for _, m := range im.BlockDeviceMappings {
			names = append(names, m.DeviceName)
		}
		return names
	},
}}

// Filter is a parsed set of image filters (filter.Filter). The zero Filter matches
// everything.
type Filter = filter.Filter[*Image]

// ParseFilter parses image filters of the form KEY=PATTERN (filter.Fields.Parse): *
// and ? are wildcards, \ escapes the next character. Errors wrap
// errdefs.ErrInvalidArgument and say which keys exist.
func ParseFilter(specs []string) (Filter, error) { return imageFields.Parse(specs) }
