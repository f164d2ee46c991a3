package events

import (
	"encoding/json"
	"time"

	"kiln/daemon/api"
)

// region is the region events name (SetRegion): the EC2 endpoint's, kiln-local-1 unless
// the settings say otherwise.
var region = api.DefaultRegion

// SetRegion makes events name r; kilnd calls it once at start, before any event.
func SetRegion(r string) { region = r }

// arn is the ARN-like name of a resource, as EventBridge's resources list them: with
// the owner for instances and volumes, without for images and snapshots (as EC2's own
// ARNs of those are).
func arn(owner, kind, id string) string {
	switch kind {
	case "image", "snapshot":
		owner = ""
	}
	return "arn:aws:ec2:" + region + ":" + owner + ":" + kind + "/" + id
}

// event is the envelope of an event of owner's about the resource (kind/id), with
// detail; Append completes it.
func event(detailType, owner, kind, id string, detail any) api.Event {
	d, _ := json.Marshal(detail) // the detail types always marshal
	return api.Event{DetailType: detailType, Account: owner, Resources: []string{arn(owner, kind, id)}, Detail: d}
}

// Image is an "EC2 AMI State Change" event: owner's image entered state (pending,
// available, failed, deregistered, disabled); reason says why a failed one failed.
func Image(id, owner, state, reason string) api.Event {
	if state != "failed" {
		reason = ""
	}
	return event(api.DetailTypeImage, owner, "image", id, api.ImageStateChange{ImageID: id, State: state, ErrorMessage: reason})
}

// Instance is an "EC2 Instance State-change Notification" event: owner's instance
// entered state.
func Instance(id, owner, state string) api.Event {
	return event(api.DetailTypeInstance, owner, "instance", id, api.InstanceStateChange{InstanceID: id, State: state})
}

// Volume events: what happened to a volume (api.VolumeNotification's Event) and its
// result.
const (
	VolumeCreated  = "createVolume"
	VolumeAttached = "attachVolume"
	VolumeDetached = "detachVolume"
	VolumeDeleted  = "deleteVolume"
)

var volumeResults = map[string]string{VolumeCreated: "available", VolumeAttached: "attached", VolumeDetached: "detached", VolumeDeleted: "deleted"}

// Volume is an "EBS Volume Notification" event: what happened to owner's volume; an
// attach or detach names the instance and device.
func Volume(id, owner, what, instance, device string) api.Event {
	return event(api.DetailTypeVolume, owner, "volume", id, api.VolumeNotification{Event: what, Result: volumeResults[what], InstanceID: instance, Device: device})
}

// Snapshot is an "EBS Snapshot Notification" event: owner's snapshot was made
// (created, at start) or deleted; image is the image it was made for, if any.
func Snapshot(id, owner, image string, created bool, start time.Time) api.Event {
	d := api.SnapshotNotification{Event: "deleteSnapshot", Result: "deleted", SnapshotID: arn(owner, "snapshot", id)}
	if created {
		d.Event, d.Result = "createSnapshot", "succeeded"
		d.StartTime, d.EndTime = start.UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339)
	}
	if image != "" {
		d.Source = arn(owner, "image", image)
	}
	return event(api.DetailTypeSnapshot, owner, "snapshot", id, d)
}
