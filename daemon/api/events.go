package api

import (
	"encoding/json"
	"strings"
	"time"
)

// Event is one line of GET /v1/events: a change kilnd recorded, in the envelope Amazon
// EventBridge delivers EC2's events in, with kiln's Sequence beside it. Detail's shape is
// DetailType's: ImageStateChange, InstanceStateChange, VolumeNotification,
// SnapshotNotification, or (a notice, not a recorded event) EventsLost.
type Event struct {
	Version    string          `json:"version"` // "0"
	ID         string          `json:"id"`      // a random UUID
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`  // EventSource (EventsLost: EventSourceKiln)
	Account    string          `json:"account"` // the resource's owner: who sees the event (and administrators)
	Time       time.Time       `json:"time"`
	Region     string          `json:"region"`    // kilnd's region (DefaultRegion)
	Resources  []string        `json:"resources"` // ARN-like names of the resources: arn:aws:ec2:REGION:OWNER:instance/i-…
	Detail     json.RawMessage `json:"detail"`
	// Sequence orders every event kilnd records, of all users, from 1 up, without a
	// hole; a reader resumes after the last it saw (?after=). An EventsLost notice
	// carries the sequence of the last event it stands for.
	Sequence uint64 `json:"sequence"`
}

// The detail types of kiln's events: EC2's and EBS's names, and kiln's notice of events
// a reader missed.
const (
	DetailTypeImage    = "EC2 AMI State Change"
	DetailTypeInstance = "EC2 Instance State-change Notification"
	DetailTypeVolume   = "EBS Volume Notification"
	DetailTypeSnapshot = "EBS Snapshot Notification"
	DetailTypeLost     = "Kiln Events Lost"
)

// EventSource is the source of every recorded event: EC2's own, so that rules and code
// written for EventBridge's EC2 events match kiln's unchanged. EventSourceKiln is the
// source of kiln's own notices (EventsLost).
const (
	EventSource     = "aws.ec2"
	EventSourceKiln = "kiln"
)

// DefaultRegion is kilnd's region when the settings' ec2.region names none: the region
// its events, its EC2 endpoint and its metadata service name.
const DefaultRegion = "kiln-local-1"

// ZoneOf is a region's one availability zone: its name with "a".
func ZoneOf(region string) string { return region + "a" }

// MediaTypeEventStream is GET /v1/events' answer: one Event per line (JSON lines).
const MediaTypeEventStream = "application/x-ndjson"

// ImageStateChange is the detail of an "EC2 AMI State Change" event. State is the state
// the image entered: pending (kiln's: EC2 sends none), available, failed, deregistered,
// or disabled; ErrorMessage says why a failed image failed. RequestId is empty: kiln's
// API has no request ids.
type ImageStateChange struct {
	RequestID    string `json:"RequestId"`
	ImageID      string `json:"ImageId"`
	State        string `json:"State"`
	ErrorMessage string `json:"ErrorMessage"`
}

// InstanceStateChange is the detail of an "EC2 Instance State-change Notification"
// event: the state the instance entered (pending, running, stopping, stopped,
// shutting-down, terminated).
type InstanceStateChange struct {
	InstanceID string `json:"instance-id"`
	State      string `json:"state"`
}

// VolumeNotification is the detail of an "EBS Volume Notification" event: Event is
// createVolume (Result available), attachVolume (attached), detachVolume (detached) or
// deleteVolume (deleted). InstanceID and Device, kiln's, name the instance and device
// of an attach or detach.
type VolumeNotification struct {
	Event      string `json:"event"`
	Result     string `json:"result"`
	Cause      string `json:"cause"`
	RequestID  string `json:"request-id"`
	InstanceID string `json:"instance-id,omitempty"`
	Device     string `json:"device,omitempty"`
}

// SnapshotNotification is the detail of an "EBS Snapshot Notification" event: Event is
// createSnapshot (Result succeeded) or deleteSnapshot (kiln's; deleted). SnapshotID is
// the snapshot's ARN, as EBS gives it; Source the image's it was made for, when any
// (EBS gives the volume's).
type SnapshotNotification struct {
	Event      string `json:"event"`
	Result     string `json:"result"`
	Cause      string `json:"cause"`
	RequestID  string `json:"request-id"`
	SnapshotID string `json:"snapshot_id"`
	Source     string `json:"source"`
	StartTime  string `json:"startTime"`
	EndTime    string `json:"endTime"`
}

// EventsLost is the detail of a "Kiln Events Lost" notice: the events after sequence
// After and before Resume were pruned (the retention in the settings file) before the
// reader read them. Missed counts them, of every user: how many of them were the
// reader's is not known. After is 0 when the reader asked for events since a time
// (Since) that the pruned ones reached.
type EventsLost struct {
	After  uint64    `json:"after"`
	Resume uint64    `json:"resume"`
	Missed uint64    `json:"missed"`
	Since  time.Time `json:"since,omitzero"`
	Reason string    `json:"reason"`
}

// Event kinds: the short names of the detail types (kiln events --filter type=…).
const (
	EventKindImage    = "image"
	EventKindInstance = "instance"
	EventKindVolume   = "volume"
	EventKindSnapshot = "snapshot"
	EventKindLost     = "lost"
)

// EventKinds maps each detail type to its kind.
var EventKinds = map[string]string{
	DetailTypeImage:    EventKindImage,
	DetailTypeInstance: EventKindInstance,
	DetailTypeVolume:   EventKindVolume,
	DetailTypeSnapshot: EventKindSnapshot,
	DetailTypeLost:     EventKindLost,
}

// Summary is what an event is about, read from its detail: its kind (EventKinds), the
// id of its resource (ami-…, i-…, vol-…, snap-…) and the state it entered or the
// result of what happened (available, running, attached, …). A detail that does not
// parse gives empty strings.
func (e *Event) Summary() (kind, resource, state string) {
	kind = EventKinds[e.DetailType]
	switch e.DetailType {
	case DetailTypeImage:
		var d ImageStateChange
		json.Unmarshal(e.Detail, &d)
		return kind, d.ImageID, d.State
	case DetailTypeInstance:
		var d InstanceStateChange
		json.Unmarshal(e.Detail, &d)
		return kind, d.InstanceID, d.State
	case DetailTypeVolume:
		var d VolumeNotification
		json.Unmarshal(e.Detail, &d)
		return kind, lastPart(e.Resources), d.Result
	case DetailTypeSnapshot:
		var d SnapshotNotification
		json.Unmarshal(e.Detail, &d)
		return kind, lastPart(e.Resources), d.Result
	}
	return kind, "", ""
}

// lastPart is the id at the end of the first resource's ARN (…:volume/vol-…).
func lastPart(arns []string) string {
	if len(arns) == 0 {
		return ""
	}
	return arns[0][strings.LastIndex(arns[0], "/")+1:]
}
