package api

import "time"

// DeprecateRequest is POST /v1/images/{image}/deprecate: deprecate the image at At (in
// the future, rounded to the minute), or, with Cancel, take its deprecation away.
type DeprecateRequest struct {
	At     *time.Time `json:"at,omitempty"`
	Cancel bool       `json:"cancel,omitempty"`
}

// ProtectRequest is POST /v1/images/{image}/protect: refuse deregistration; with
// Cooldown, for 24 hours more once protection is turned off.
type ProtectRequest struct {
	Cooldown bool `json:"cooldown,omitempty"`
}

// Resource types of recycle bin rules.
const (
	BinResourceImage    = "image"
	BinResourceSnapshot = "snapshot"
)

// Lock states of a recycle bin rule, EC2's.
const (
	LockLocked        = "locked"
	LockPendingUnlock = "pending_unlock"
	LockUnlocked      = "unlocked"
)

// ResourceTag is a tag a recycle bin rule matches: Key with Value, or with any value
// when Value is empty.
type ResourceTag struct {
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
}

// CreateRuleRequest is POST /v1/recycle-bin/rules: keep the caller's images (or
// snapshots) that match in the recycle bin for RetentionDays (1 to 365) once
// deregistered (deleted). With ResourceTags, only those with at least one of the tags;
// without, all of them (and only such a rule may be locked). UnlockDelayDays (7 to 30)
// locks the rule: it cannot be deleted until unlocked and that many days have passed.
type CreateRuleRequest struct {
	ResourceType    string        `json:"resourceType"`
	RetentionDays   int           `json:"retentionDays"`
	Description     string        `json:"description,omitempty"`
	ResourceTags    []ResourceTag `json:"resourceTags,omitempty"`
	UnlockDelayDays int           `json:"unlockDelayDays,omitempty"`
}

// Rule is a recycle bin retention rule as the API shows it.
type Rule struct {
	ID              string        `json:"id"`
	OwnerID         string        `json:"ownerId"`
	Description     string        `json:"description,omitempty"`
	ResourceType    string        `json:"resourceType"`
	RetentionDays   int           `json:"retentionDays"`
	ResourceTags    []ResourceTag `json:"resourceTags"`
	LockState       string        `json:"lockState"`
	UnlockDelayDays int           `json:"unlockDelayDays,omitempty"`
	// LockEndTime is when a rule being unlocked (pending_unlock) becomes unlocked.
	LockEndTime *time.Time `json:"lockEndTime,omitempty"`
	CreateTime  time.Time  `json:"createTime"`
}

// RecycleBin is GET /v1/recycle-bin: the caller's images and snapshots in the recycle
// bin (an administrator's: everyone's).
type RecycleBin struct {
	Images    []BinImage    `json:"images"`
	Snapshots []BinSnapshot `json:"snapshots"`
}

// BinImage is an image in the recycle bin (EC2's ListImagesInRecycleBin).
type BinImage struct {
	ID                  string    `json:"id"`
	Name                string    `json:"name"`
	OwnerID             string    `json:"ownerId"`
	Description         string    `json:"description,omitempty"`
	RecycleBinEnterTime time.Time `json:"recycleBinEnterTime"`
	RecycleBinExitTime  time.Time `json:"recycleBinExitTime"`
}

// BinSnapshot is a snapshot in the recycle bin (EC2's ListSnapshotsInRecycleBin).
type BinSnapshot struct {
	ID                  string    `json:"id"`
	OwnerID             string    `json:"ownerId"`
	Description         string    `json:"description,omitempty"`
	VolumeSize          int64     `json:"volumeSize"`
	RecycleBinEnterTime time.Time `json:"recycleBinEnterTime"`
	RecycleBinExitTime  time.Time `json:"recycleBinExitTime"`
}
