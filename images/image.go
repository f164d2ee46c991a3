package images

import (
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

// Media types of kiln's content. A kiln image is an OCI image manifest whose config is
// a kiln image config and whose layers are qcow2 layers (each chain bottom to top), the
// kernel and the initrd.
const (
	// ArtifactType is the artifactType of every kiln image manifest: what a registry,
	// skopeo or oras shows a kiln image to be.
	ArtifactType    = "application/vnd.kiln.image.v1+json"
	MediaTypeConfig = "application/vnd.kiln.image.config.v1+json"
	MediaTypeLayer  = "application/vnd.kiln.disk.qcow2"
	MediaTypeKernel = "application/vnd.kiln.kernel"
	MediaTypeInitrd = "application/vnd.kiln.initrd"
	// MediaTypeUEFIData is a UEFI variable store (an OVMF flash image): the variables
	// an instance of the image starts with (EC2's UEFI data).
	MediaTypeUEFIData = "application/vnd.kiln.uefi-data"
)

// MaxBootFileSize bounds a kernel or initrd blob (registered or pulled).
const MaxBootFileSize = 512 << 20

// State is an image's state, as in the cloud.
type State string

// Image states.
const (
	StatePending   State = "pending"   // being made; not launchable
	StateAvailable State = "available" // complete; all content present
	StateFailed    State = "failed"    // making it failed; StateReason says why
)

// Architectures and boot modes kiln knows.
var (
	Architectures   = []string{"x86_64", "arm64"}
	BootModes       = []string{"legacy-bios", "uefi", "uefi-preferred"}
	RootDeviceTypes = []string{"ebs", "instance-store"}
)

// Config is an image's immutable description, stored as a blob of MediaTypeConfig.
type Config struct {
	Architecture   string        `json:"architecture"`
	BootMode       string        `json:"bootMode"`
	RootDeviceName string        `json:"rootDeviceName"`
	RootDeviceType string        `json:"rootDeviceType"`
	Kernel         digest.Digest `json:"kernel,omitempty"`
	Initrd         digest.Digest `json:"initrd,omitempty"`
	Cmdline        string        `json:"cmdline,omitempty"`
	// SSHUser is the user kiln ssh logs in as by default (register --ssh-user).
	SSHUser             string               `json:"sshUser,omitempty"`
	BlockDeviceMappings []BlockDeviceMapping `json:"blockDeviceMappings"`
	// UEFIData is the variable store instances start with (MediaTypeUEFIData); none:
	// the firmware's template. SecureBoot boots them with Secure Boot enforced, and
	// TPMSupport ("v2.0" or none) gives them a virtual TPM. All three need a UEFI boot
	// mode (CheckFirmware).
	UEFIData   digest.Digest `json:"uefiData,omitempty"`
	SecureBoot bool          `json:"secureBoot,omitempty"`
	TPMSupport string        `json:"tpmSupport,omitempty"`
}

// TPMSupportV2 is the one TPM an image may ask for (EC2's NitroTPM value).
const TPMSupportV2 = "v2.0"

// UEFI reports whether a boot mode boots UEFI firmware when it can: uefi, and
// uefi-preferred (which kiln, having OVMF, always boots UEFI).
func UEFI(bootMode string) bool { return bootMode == "uefi" || bootMode == "uefi-preferred" }

// MaxUEFIDataSize bounds an image's UEFI data (OVMF's 4M variable store is 528 KiB).
const MaxUEFIDataSize = 4 << 20

// BlockDeviceMapping is one device an instance of the image gets.
type BlockDeviceMapping struct {
	DeviceName string `json:"deviceName"`
	EBS        *EBS   `json:"ebs,omitempty"`
}

// EBS is a volume made from a snapshot at launch.
type EBS struct {
	SnapshotID          string        `json:"snapshotId"`
	Layer               digest.Digest `json:"layer"`      // the snapshot's top layer
	VolumeSize          int64         `json:"volumeSize"` // GiB
	DeleteOnTermination bool          `json:"deleteOnTermination"`
	Encrypted           bool          `json:"encrypted"`
}

// Image is an image's mutable record in the metadata DB. It carries a copy of its
// config so that listing and filtering never read blobs.
type Image struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	OwnerID     string            `json:"ownerId"`
	Description string            `json:"description,omitempty"`
	State       State             `json:"state"`
	StateReason string            `json:"stateReason,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Public      bool              `json:"public"`
	// LaunchPermission names the users and groups the image is shared with.
	LaunchPermission LaunchPermission `json:"launchPermission"`
	CreationDate     time.Time        `json:"creationDate"`
	Manifest         digest.Digest    `json:"manifest,omitempty"` // set when available
	// Lineage: the instance and image an image was created from (empty for a
	// registered one), and the image it was copied from.
	SourceInstanceID string `json:"sourceInstanceId,omitempty"`
	SourceImageID    string `json:"sourceImageId,omitempty"`
	CopiedFromID     string `json:"copiedFromId,omitempty"`
	// SourceRef is the registry reference an image was pulled from
	// (REGISTRY/REPOSITORY[:TAG|@sha256:…]), or the file it was imported from; and
	// SourceDigest the digest of the manifest as the registry or file held it.
	SourceRef    string        `json:"sourceRef,omitempty"`
	SourceDigest digest.Digest `json:"sourceDigest,omitempty"`
	// PushedTo is the registry reference the image was last pushed to
	// (REGISTRY/REPOSITORY:TAG): where a later push, of it or of an image made from
	// it, may mount its blobs from.
	PushedTo string `json:"pushedTo,omitempty"`
	Config
	// Lifecycle: deprecation, deregistration protection, the recycle bin.
	Lifecycle
	// LastLaunchedTime is when an instance was last launched from the image (zero:
	// never).
	LastLaunchedTime time.Time `json:"lastLaunchedTime,omitzero"`
}

// Snapshot is a snapshot's record: a point-in-time copy of a volume, held as one layer
// (with its parents) in the content store.
type Snapshot struct {
	ID          string            `json:"id"`
	OwnerID     string            `json:"ownerId"`
	Description string            `json:"description,omitempty"`
	Layer       digest.Digest     `json:"layer"`
	Chain       []digest.Digest   `json:"chain"`             // bottom to top; the last is Layer
	VolumeSize  int64             `json:"volumeSize"`        // GiB
	VirtualSize int64             `json:"virtualSize"`       // bytes
	StorageSize int64             `json:"storageSize"`       // bytes of the layer blob
	ImageID     string            `json:"imageId,omitempty"` // the image it was made for
	Tags        map[string]string `json:"tags,omitempty"`
	StartTime   time.Time         `json:"startTime"`
	// Bin is set while the snapshot is in the recycle bin.
	Bin *BinStay `json:"recycleBin,omitempty"`
}

// clone returns a deep copy, so callers never share a cached record's maps or slices.
func (im *Image) clone() *Image {
	c := *im
	c.Tags = cloneTags(im.Tags)
	c.LaunchPermission = im.LaunchPermission.clone()
	c.BlockDeviceMappings = slices.Clone(im.BlockDeviceMappings)
	for i, m := range c.BlockDeviceMappings {
		if m.EBS != nil {
			e := *m.EBS
			c.BlockDeviceMappings[i].EBS = &e
		}
	}
	c.Bin = cloneStay(im.Bin)
	return &c
}

func (sn *Snapshot) clone() *Snapshot {
	c := *sn
	c.Tags = cloneTags(sn.Tags)
	c.Chain = slices.Clone(sn.Chain)
	c.Bin = cloneStay(sn.Bin)
	return &c
}

func cloneStay(b *BinStay) *BinStay {
	if b == nil {
		return nil
	}
	c := *b
	return &c
}

func cloneTags(t map[string]string) map[string]string {
	if t == nil {
		return nil
	}
	c := make(map[string]string, len(t))
	for k, v := range t {
		c[k] = v
	}
	return c
}
