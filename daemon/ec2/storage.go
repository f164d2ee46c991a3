package ec2

import (
	"slices"

	"kiln/daemon/api"
)

type volumeAttachment struct {
	AttachTime          string `xml:"attachTime"`
	Device              string `xml:"device"`
	InstanceID          string `xml:"instanceId"`
	State               string `xml:"status"`
	VolumeID            string `xml:"volumeId"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type volume struct {
	Attachments      list[volumeAttachment] `xml:"attachmentSet"`
	AvailabilityZone string                 `xml:"availabilityZone"`
	CreateTime       string                 `xml:"createTime"`
	Encrypted        bool                   `xml:"encrypted"`
	Size             int64                  `xml:"size"`
	SnapshotID       string                 `xml:"snapshotId"`
	State            string                 `xml:"status"`
	VolumeID         string                 `xml:"volumeId"`
	Tags             list[tag]              `xml:"tagSet"`
	VolumeType       string                 `xml:"volumeType"`
}

func (s *Server) volumeOf(v api.Volume) volume {
	out := volume{AvailabilityZone: s.Zone(), CreateTime: ts(v.CreateTime), Size: v.SizeGiB, SnapshotID: v.SnapshotID,
		State: v.State, VolumeID: v.ID, Tags: tagSet(v.Tags), VolumeType: volumeType, Attachments: list[volumeAttachment]{Items: []volumeAttachment{}}}
	if v.InstanceID != "" {
		out.Attachments.Items = append(out.Attachments.Items, attachmentOf(v))
	}
	return out
}

func attachmentOf(v api.Volume) volumeAttachment {
	state := "detached"
	if v.InstanceID != "" {
		state = "attached"
	}
	return volumeAttachment{AttachTime: ts(v.CreateTime), Device: v.DeviceName, InstanceID: v.InstanceID, State: state,
		VolumeID: v.ID, DeleteOnTermination: v.DeleteOnTermination}
}

type describeVolumesResponse struct {
	meta
	Volumes   list[volume] `xml:"volumeSet"`
	NextToken string       `xml:"nextToken,omitempty"`
}

func describeVolumes(c *call) (answer, *Error) {
	want := c.p.values("VolumeId")
	if e := checkIDs("InvalidVolumeID.Malformed", "vol", want); e != nil {
		return nil, e
	}
	if len(want) > 0 && c.p.get("MaxResults") != "" {
		return nil, errorf(codeInvalidParameterCombo, "The parameter volumeSet cannot be used with the parameter maxResults")
	}
	c.p.capAt("MaxResults", 500) // more is 500, as EC2's
	fs, e := c.p.filters()
	if e != nil {
		return nil, e
	}
	var all []api.Volume
	if err := c.s.kiln.Call(c.ctx, "GET", "/volumes", kilnFilters(fs), nil, &all); err != nil {
		return nil, fromAPI(err, false)
	}
	if len(want) > 0 {
		if e := c.volumesExist(want); e != nil {
			return nil, e
		}
		all = slices.DeleteFunc(all, func(v api.Volume) bool { return !slices.Contains(want, v.ID) })
	}
	if c.dry {
		return c.dryRun()
	}
	pg, next, e := page(c.p, all, func(v api.Volume) string { return v.ID }, 5, 500)
	if e != nil {
		return nil, e
	}
	resp := &describeVolumesResponse{NextToken: next, Volumes: list[volume]{Items: []volume{}}}
	for _, v := range pg {
		resp.Volumes.Items = append(resp.Volumes.Items, c.s.volumeOf(v))
	}
	return resp, nil
}

// volumesExist refuses ids of volumes the caller cannot see.
func (c *call) volumesExist(want []string) *Error {
	var missing []string
	for _, id := range want {
		if _, e := c.volume(id); e != nil {
			if e.Code != "InvalidVolume.NotFound" {
				return e
			}
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return notFound("InvalidVolume.NotFound", "volume", missing)
	}
	return nil
}

// volume is the volume id names, as the caller sees it.
func (c *call) volume(id string) (api.Volume, *Error) {
	if e := checkIDs("InvalidVolumeID.Malformed", "vol", []string{id}); e != nil {
		return api.Volume{}, e
	}
	v, err := c.s.kiln.Volume(c.ctx, id)
	if err != nil {
		return v, fromAPI(err, false)
	}
	return v, nil
}

type createVolumeResponse struct {
	meta
	volume
}

func createVolume(c *call) (answer, *Error) {
	zone, e := c.p.required("AvailabilityZone")
	if e != nil {
		return nil, e
	}
	if zone != c.s.Zone() {
		return nil, errorf(codeInvalidParameterValue, "Invalid availability zone: [%s]: this kiln's one zone is %s", clip(zone), c.s.Zone())
	}
	size, e := c.p.integer("Size", 0, 1, api.MaxVolumeGiB)
	if e != nil {
		return nil, e
	}
	if enc, e := c.p.boolean("Encrypted"); e != nil || enc {
		if e != nil {
			return nil, e
		}
		return nil, errorf(codeInvalidParameterValue, "kiln does not encrypt volumes yet")
	}
	if e := checkVolumeType(c.p.get("VolumeType")); e != nil {
		return nil, e
	}
	for _, unsupported := range []string{"Iops", "Throughput", "KmsKeyId", "OutpostArn", "MultiAttachEnabled"} {
		if c.p.get(unsupported) != "" {
			return nil, errorf(codeInvalidParameterValue, "%s: kiln's volumes have no such setting", unsupported)
		}
	}
	specs, e := c.p.tagSpecs("volume")
	if e != nil {
		return nil, e
	}
	snap := c.p.get("SnapshotId")
	if snap != "" {
		if e := checkIDs("InvalidSnapshotID.Malformed", "snap", []string{snap}); e != nil {
			return nil, e
		}
	} else if size == 0 {
		return nil, errorf(codeMissingParameter, "The request must contain the parameter Size or SnapshotId")
	}
	if c.dry {
		return c.dryRun()
	}
	made, e := c.s.tokens.once(c, func() ([]string, *Error) {
		v, err := c.s.kiln.CreateVolume(c.ctx, api.CreateVolumeRequest{SizeGiB: int64(size), SnapshotID: snap, Tags: specs["volume"]})
		if err != nil {
			return nil, fromAPI(err, false)
		}
		return []string{v.ID}, nil
	})
	if e != nil {
		return nil, e
	}
	v, e := c.volume(made[0])
	if e != nil {
		return nil, e
	}
	return &createVolumeResponse{volume: c.s.volumeOf(v)}, nil
}

// checkVolumeType refuses volume types other than kiln's one (and the general purpose
// ones, taken as it).
func checkVolumeType(t string) *Error {
	switch t {
	case "", volumeType, "gp2", "gp3":
		return nil
	}
	return errorf(codeInvalidParameterValue, "VolumeType %s: kiln's volumes are of one type (%s; gp2 and gp3 are taken as it)", clip(t), volumeType)
}

type attachmentResponse struct {
	meta
	volumeAttachment
}

func attachVolume(c *call) (answer, *Error) {
	id, e := c.p.required("VolumeId")
	if e != nil {
		return nil, e
	}
	inst, e := c.p.required("InstanceId")
	if e != nil {
		return nil, e
	}
	device, e := c.p.required("Device")
	if e != nil {
		return nil, e
	}
	if _, e := c.volume(id); e != nil {
		return nil, e
	}
	if _, e := c.instance(inst); e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	v, err := c.s.kiln.AttachVolume(c.ctx, id, inst, device)
	if err != nil {
		return nil, fromAPI(err, true)
	}
	a := attachmentOf(v)
	a.State = "attaching"
	return &attachmentResponse{volumeAttachment: a}, nil
}

func detachVolume(c *call) (answer, *Error) {
	id, e := c.p.required("VolumeId")
	if e != nil {
		return nil, e
	}
	before, e := c.volume(id)
	if e != nil {
		return nil, e
	}
	if inst := c.p.get("InstanceId"); inst != "" && inst != before.InstanceID || c.p.get("Device") != "" && c.p.get("Device") != before.DeviceName {
		return nil, errorf(codeIncorrectState, "Volume %s is not attached to %s %s", id, clip(inst), clip(c.p.get("Device")))
	}
	if before.InstanceID == "" {
		return nil, errorf(codeIncorrectState, "Volume '%s' is in the 'available' state.", id)
	}
	if force, e := c.p.boolean("Force"); e != nil || force {
		if e != nil {
			return nil, e
		}
		return nil, errorf(codeInvalidParameterValue, "Force: kiln detaches only what the guest lets go of; stop the instance to detach a volume it holds")
	}
	if c.dry {
		return c.dryRun()
	}
	if _, err := c.s.kiln.DetachVolume(c.ctx, id); err != nil {
		return nil, fromAPI(err, true)
	}
	a := attachmentOf(before)
	a.State = "detaching"
	return &attachmentResponse{volumeAttachment: a}, nil
}

func deleteVolume(c *call) (answer, *Error) {
	id, e := c.p.required("VolumeId")
	if e != nil {
		return nil, e
	}
	if _, e := c.volume(id); e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	if _, err := c.s.kiln.DeleteVolume(c.ctx, id); err != nil {
		return nil, fromAPI(err, false)
	}
	return ok()
}

type snapshot struct {
	Description string    `xml:"description"`
	Encrypted   bool      `xml:"encrypted"`
	OwnerID     string    `xml:"ownerId"`
	Progress    string    `xml:"progress"`
	SnapshotID  string    `xml:"snapshotId"`
	StartTime   string    `xml:"startTime"`
	State       string    `xml:"status"`
	VolumeSize  int64     `xml:"volumeSize"`
	Tags        list[tag] `xml:"tagSet"`
}

type describeSnapshotsResponse struct {
	meta
	Snapshots list[snapshot] `xml:"snapshotSet"`
	NextToken string         `xml:"nextToken,omitempty"`
}

func describeSnapshots(c *call) (answer, *Error) {
	want := c.p.values("SnapshotId")
	if e := checkIDs("InvalidSnapshotID.Malformed", "snap", want); e != nil {
		return nil, e
	}
	if len(want) > 0 && c.p.get("MaxResults") != "" {
		return nil, errorf(codeInvalidParameterCombo, "The parameter snapshotSet cannot be used with the parameter maxResults")
	}
	c.p.capAt("MaxResults", 1000) // more is 1000, as EC2's
	fs, e := c.p.filters()
	if e != nil {
		return nil, e
	}
	if len(c.p.values("RestorableBy")) > 0 {
		return nil, errorf(codeInvalidParameterValue, "RestorableBy: kiln's snapshots are not shared; each user sees their own")
	}
	var all []api.Snapshot
	if err := c.s.kiln.Call(c.ctx, "GET", "/snapshots", kilnFilters(fs), nil, &all); err != nil {
		return nil, fromAPI(err, false)
	}
	owners := c.owners()
	all = slices.DeleteFunc(all, func(sn api.Snapshot) bool {
		return len(want) > 0 && !slices.Contains(want, sn.ID) || len(owners) > 0 && !slices.Contains(owners, sn.OwnerID)
	})
	if len(want) > 0 {
		var missing []string
		for _, id := range want {
			if _, err := c.s.kiln.Snapshot(c.ctx, id); err != nil {
				if e := fromAPI(err, false); e.Code != api.CodeInvalidSnapshotNotFound {
					return nil, e
				}
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return nil, notFound("InvalidSnapshot.NotFound", "snapshot", missing)
		}
	}
	if c.dry {
		return c.dryRun()
	}
	pg, next, e := page(c.p, all, func(sn api.Snapshot) string { return sn.ID }, 5, 1000)
	if e != nil {
		return nil, e
	}
	resp := &describeSnapshotsResponse{NextToken: next, Snapshots: list[snapshot]{Items: []snapshot{}}}
	for _, sn := range pg {
		resp.Snapshots.Items = append(resp.Snapshots.Items, snapshot{Description: sn.Description, OwnerID: sn.OwnerID, Progress: "100%",
			SnapshotID: sn.ID, StartTime: ts(sn.StartTime), State: "completed", VolumeSize: sn.VolumeSize, Tags: tagSet(sn.Tags)})
	}
	return resp, nil
}
