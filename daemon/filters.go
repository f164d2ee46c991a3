package daemon

import (
	"net/http"
	"strconv"

	"kiln/daemon/api"
	"kiln/internal/filter"
)

// The filters of the listings besides images' (images.ParseFilter), with EC2's names
// (DescribeInstances, DescribeVolumes, DescribeSnapshots, DescribeKeyPairs), over the
// resources as the API shows them; each has tag:KEY and tag-key too.
var (
	instanceFields = &filter.Fields[*api.Instance]{Tags: func(x *api.Instance) map[string]string { return x.Tags }, Keys: map[string]func(*api.Instance) []string{
		"instance-id":         func(x *api.Instance) []string { return []string{x.ID} },
		"instance-state-name": func(x *api.Instance) []string { return []string{x.State} },
		"image-id":            func(x *api.Instance) []string { return []string{x.ImageID} },
		"instance-type":       func(x *api.Instance) []string { return []string{x.InstanceType} },
		"owner-id":            func(x *api.Instance) []string { return []string{x.OwnerID} },
		"key-name":            func(x *api.Instance) []string { return []string{x.KeyName} },
	}}
	volumeFields = &filter.Fields[*api.Volume]{Tags: func(x *api.Volume) map[string]string { return x.Tags }, Keys: map[string]func(*api.Volume) []string{
		"volume-id":              func(x *api.Volume) []string { return []string{x.ID} },
		"status":                 func(x *api.Volume) []string { return []string{x.State} },
		"size":                   func(x *api.Volume) []string { return []string{strconv.FormatInt(x.SizeGiB, 10)} },
		"snapshot-id":            func(x *api.Volume) []string { return []string{x.SnapshotID} },
		"attachment.instance-id": func(x *api.Volume) []string { return []string{x.InstanceID} },
		"attachment.device":      func(x *api.Volume) []string { return []string{x.DeviceName} },
	}}
	snapshotFields = &filter.Fields[*api.Snapshot]{Tags: func(x *api.Snapshot) map[string]string { return x.Tags }, Keys: map[string]func(*api.Snapshot) []string{
		"snapshot-id": func(x *api.Snapshot) []string { return []string{x.ID} },
		"owner-id":    func(x *api.Snapshot) []string { return []string{x.OwnerID} },
		"volume-size": func(x *api.Snapshot) []string { return []string{strconv.FormatInt(x.VolumeSize, 10)} },
		"description": func(x *api.Snapshot) []string { return []string{x.Description} },
	}}
	keyPairFields = &filter.Fields[*api.KeyPair]{Tags: func(x *api.KeyPair) map[string]string { return x.Tags }, Keys: map[string]func(*api.KeyPair) []string{
		"key-name":    func(x *api.KeyPair) []string { return []string{x.KeyName} },
		"key-pair-id": func(x *api.KeyPair) []string { return []string{x.KeyPairID} },
		"fingerprint": func(x *api.KeyPair) []string { return []string{x.KeyFingerprint} },
		"key-type":    func(x *api.KeyPair) []string { return []string{x.KeyType} },
	}}
)

// answerList answers with list less what the request's filters (?filter=KEY=PATTERN,
// repeatable) refuse; bad filters are an InvalidParameterValue naming the known keys.
func answerList[T any](w http.ResponseWriter, r *http.Request, fields *filter.Fields[*T], list []T) error {
	f, err := fields.Parse(r.URL.Query()["filter"])
	if err != nil {
		return err
	}
	out := make([]T, 0, len(list))
	for i := range list {
		if f.Match(&list[i]) {
			out = append(out, list[i])
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
