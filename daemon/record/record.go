package record

import (
	"time"

	"github.com/opencontainers/go-digest"
)

// Instance states, as in the cloud.
const (
	StatePending      = "pending"
	StateRunning      = "running"
	StateStopping     = "stopping"
	StateStopped      = "stopped"
	StateShuttingDown = "shutting-down"
	StateTerminated   = "terminated"
)

// Id prefixes.
const (
	InstancePrefix = "i-"
	VolumePrefix   = "vol-"
)

// Instance is an instance's record in the metadata DB.
type Instance struct {
	ID             string        `json:"id"`
	Name           string        `json:"name"`
	ImageID        string        `json:"imageId"`
	OwnerID        string        `json:"ownerId"`
	State          string        `json:"state"`
	StateReason    string        `json:"stateReason,omitempty"`
	InstanceType   string        `json:"instanceType,omitempty"`
	CPUs           int           `json:"cpus"`
	MemoryMiB      int           `json:"memoryMiB"`
	Accel          string        `json:"accelerator"`
	RootDeviceType string        `json:"rootDeviceType"`
	RootDeviceName string        `json:"rootDeviceName"`
	Kernel         digest.Digest `json:"kernel,omitempty"`
	Initrd         digest.Digest `json:"initrd,omitempty"`
	Cmdline        string        `json:"cmdline,omitempty"`
	Mappings       []Mapping     `json:"blockDeviceMappings"`
	Seed           bool          `json:"seed,omitempty"`
	SeedDevice     string        `json:"seedDevice,omitempty"` // the device the seed takes in the guest
	LaunchTime     time.Time     `json:"launchTime"`
	TerminatedAt   time.Time     `json:"terminatedAt,omitzero"`
	PID            int           `json:"pid,omitempty"`
	// QEMUSlot picks the user its QEMU runs as (machines.Users), kept for its life.
	QEMUSlot uint32 `json:"qemuSlot,omitempty"`
	// ConsoleStart is the console log's size when QEMU last started: what the current
	// boot printed comes after it.
	ConsoleStart int64 `json:"consoleStart,omitempty"`
	// Boots counts the times QEMU was started for the instance (launch, each start after
	// a stop): the number on the console's boot lines (console.BootLine).
	Boots int `json:"boots,omitempty"`
	// ForceOffAt is, while a stop waits for the guest to answer the power button, when
	// kilnd stops waiting and forces it off.
	ForceOffAt time.Time `json:"forceOffAt,omitzero"`
	// SSHPort is the loopback port forwarded to the guest's port 22, chosen at launch
	// and kept for the instance's life; Ports are the ports published at launch.
	SSHPort int    `json:"sshPort,omitempty"`
	Ports   []Port `json:"ports,omitempty"`
	// KeyName is the key pair whose public key the guest was given at launch.
	KeyName string `json:"keyName,omitempty"`
	// SSHUser is its image's default SSH user, as the image said at launch.
	SSHUser string `json:"sshUser,omitempty"`
	// MetadataTokensRequired: its metadata service answers IMDSv2 requests only.
	MetadataTokensRequired bool `json:"metadataTokensRequired,omitempty"`
	// BootMode is the mode it boots with, chosen at launch from its image's (an
	// image's uefi-preferred is uefi here); a uefi instance has its own variable store
	// (hypervisor.VarsFile) in its directory. SecureBoot and TPM are its image's.
	BootMode   string `json:"bootMode,omitempty"`
	SecureBoot bool   `json:"secureBoot,omitempty"`
	TPM        bool   `json:"tpm,omitempty"`
	// Tags are the instance's tags. In memory the instance domain keeps them beside the
	// record (they change without the instance's operation lock).
	Tags map[string]string `json:"tags,omitempty"`
}

// Port is a host port forwarded to a port of the guest.
type Port struct {
	Protocol  string `json:"protocol"`
	HostIP    string `json:"hostIp"`
	HostPort  int    `json:"hostPort"`
	GuestPort int    `json:"guestPort"`
}

// Mapping is a volume of an instance, by the device name the guest sees it under.
type Mapping struct {
	DeviceName          string `json:"deviceName"`
	VolumeID            string `json:"volumeId"`
	DeleteOnTermination bool   `json:"deleteOnTermination"`
}

// Volume is a volume: a qcow2 overlay over a layer chain, or a blank one.
type Volume struct {
	ID                  string          `json:"id"`
	OwnerID             string          `json:"ownerId"`
	InstanceID          string          `json:"instanceId,omitempty"`
	DeviceName          string          `json:"deviceName,omitempty"`
	SnapshotID          string          `json:"snapshotId,omitempty"`
	Chain               []digest.Digest `json:"chain,omitempty"` // layers under it, bottom to top
	SizeGiB             int64           `json:"sizeGiB"`
	DeleteOnTermination bool            `json:"deleteOnTermination"`
	CreateTime          time.Time       `json:"createTime"`
	// Standalone is a volume made on its own (kiln volume create), not at a launch: it
	// outlives instances, and InstanceID is the one it is attached to, if any.
	Standalone bool `json:"standalone,omitempty"`
	// Port is the PCIe root port a volume hot-plugged into a running instance uses; a
	// restart of the instance puts it with the others.
	Port string `json:"port,omitempty"`
	// Frozen are files (in the volume's directory) that were the volume's top until a
	// live capture put a new top on them, bottom to top, between Chain and the top. One
	// with a Layer is in the store as that layer (and in Chain): its file is kept only
	// while the QEMU that opened it runs.
	Frozen []Frozen `json:"frozen,omitempty"`
	// Tags are the volume's tags.
	Tags map[string]string `json:"tags,omitempty"`
}

// Frozen is a file that was a volume's top, and the layer made of it once captured.
type Frozen struct {
	Name  string        `json:"name"`
	Layer digest.Digest `json:"layer,omitempty"`
}
