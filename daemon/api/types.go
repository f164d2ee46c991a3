package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Version is the API's path prefix.
const Version = "v1"

// Info is GET /v1/info.
type Info struct {
	Version     string `json:"version"`
	Accelerator string `json:"accelerator"` // kvm or tcg
	// AcceleratorReason says why: the probe's result, or the operator's choice.
	AcceleratorReason string `json:"acceleratorReason"`
	// InstanceUnits is how instances are kept: systemd-scope or detached.
	InstanceUnits string `json:"instanceUnits"`
	// Network says what guests' networks give (outbound connections, the metadata
	// service), and why not when they do not.
	Network string `json:"network"`
	Root    string `json:"root"`
	Socket  string `json:"socket"`
	// Images, Snapshots and Instances count what the caller can see.
	Images    int `json:"images"`
	Snapshots int `json:"snapshots"`
	Instances int `json:"instances"`
	// InstanceTypes are the sizes kiln run --type takes.
	InstanceTypes []InstanceType `json:"instanceTypes"`
	// EC2Endpoint and EC2Region: where kilnd answers EC2's Query API (aws
	// --endpoint-url), when it does.
	EC2Endpoint string `json:"ec2Endpoint,omitempty"`
	EC2Region   string `json:"ec2Region,omitempty"`
}

// Image is an image as the API shows it (GET /v1/images, /v1/images/{image}).
type Image struct {
	ID                  string               `json:"id"`
	Name                string               `json:"name"`
	OwnerID             string               `json:"ownerId"`
	Description         string               `json:"description,omitempty"`
	State               string               `json:"state"`
	StateReason         string               `json:"stateReason,omitempty"`
	Architecture        string               `json:"architecture"`
	BootMode            string               `json:"bootMode"`
	RootDeviceType      string               `json:"rootDeviceType"`
	RootDeviceName      string               `json:"rootDeviceName"`
	BlockDeviceMappings []BlockDeviceMapping `json:"blockDeviceMappings"`
	Kernel              string               `json:"kernel,omitempty"` // digest
	Initrd              string               `json:"initrd,omitempty"` // digest
	Cmdline             string               `json:"cmdline,omitempty"`
	SSHUser             string               `json:"sshUser,omitempty"` // kiln ssh's default user
	Tags                map[string]string    `json:"tags"`
	Public              bool                 `json:"public"`
	LaunchPermission    *LaunchPermission    `json:"launchPermission,omitempty"` // shown to the owner (and administrators) only
	CreationDate        time.Time            `json:"creationDate"`
	ManifestDigest      string               `json:"manifestDigest,omitempty"`
	SourceInstanceID    string               `json:"sourceInstanceId,omitempty"`
	SourceImageID       string               `json:"sourceImageId,omitempty"`
	CopiedFromID        string               `json:"copiedFromId,omitempty"`
	// SourceRef and SourceDigest: where a pulled image came from, and its manifest's
	// digest there.
	SourceRef    string `json:"sourceRef,omitempty"`
	SourceDigest string `json:"sourceDigest,omitempty"`
	// Copies are the images copied from this one by other users, shown to its owner
	// (and administrators) by inspect only: whoever may launch an image may copy it, as
	// in the cloud, and owns the copy.
	Copies   []ImageCopy `json:"copies,omitempty"`
	Progress *Progress   `json:"progress,omitempty"` // while pending
	// DeprecationTime is when the image is (or was) deprecated; DeregistrationProtection
	// is EC2's: disabled, enabled, enabled-with-cooldown or "disabled-until TIME".
	DeprecationTime          *time.Time `json:"deprecationTime,omitempty"`
	DeregistrationProtection string     `json:"deregistrationProtection,omitempty"`
	// TPMSupport is v2.0 for an image whose instances get a TPM; SecureBoot: they boot
	// with Secure Boot enforced; UEFIData is the digest of the variable store they start
	// with (none: the firmware's).
	TPMSupport string `json:"tpmSupport,omitempty"`
	SecureBoot bool   `json:"secureBoot,omitempty"`
	UEFIData   string `json:"uefiData,omitempty"`
	// LastLaunchedTime is when an instance was last launched from the image.
	LastLaunchedTime *time.Time `json:"lastLaunchedTime,omitempty"`
}

// ImageCopy is an image copied from another by another user.
type ImageCopy struct {
	ID      string `json:"id"`
	OwnerID string `json:"ownerId"`
	Public  bool   `json:"public"`
}

// LaunchPermission is who besides its owner may launch an image: Unix users and
// groups, or everyone when Public.
type LaunchPermission struct {
	Users  []string `json:"users"`
	Groups []string `json:"groups"`
	Public bool     `json:"public"`
}

// ShareRequest is POST /v1/images/{image}/share and /unshare: add these to (or remove
// them from) the image's launch permission. Unsharing stops new launches only.
type ShareRequest struct {
	Users  []string `json:"users,omitempty"`
	Groups []string `json:"groups,omitempty"`
	Public bool     `json:"public,omitempty"`
}

// Progress is how far an image being made has come.
type Progress struct {
	BytesDone  int64 `json:"bytesDone"`
	BytesTotal int64 `json:"bytesTotal"`
}

// BlockDeviceMapping is one device of an image.
type BlockDeviceMapping struct {
	DeviceName string `json:"deviceName"`
	EBS        *EBS   `json:"ebs,omitempty"`
}

// EBS is a volume made from a snapshot at launch.
type EBS struct {
	SnapshotID          string `json:"snapshotId"`
	VolumeSize          int64  `json:"volumeSize"` // GiB
	DeleteOnTermination bool   `json:"deleteOnTermination"`
	Encrypted           bool   `json:"encrypted"`
}

// Files a request reads (disks, kernel, initrd) never travel as paths: kilnd never
// opens a path a caller names. The client opens each file with the caller's own rights
// and passes the open descriptors with the request (SCM_RIGHTS on the Unix socket,
// sent with the request's first bytes); the request names them by their index among
// the passed files. So a caller registers only what it can read.

// Disk is one disk file of a register request.
type Disk struct {
	File       int    `json:"file"`                 // index of the passed file
	Name       string `json:"name,omitempty"`       // the caller's name for it: the client opens it; kilnd shows it in messages
	Format     string `json:"format"`               // qcow2, raw, vmdk or vhdx
	DeviceName string `json:"deviceName,omitempty"` // default: /dev/vda, /dev/vdb, ...
	// ForceRaw takes a raw disk as raw even when its bytes hold another format's header
	// (a qcow2's, a VMDK's, ...), which is otherwise refused as a disk of another
	// format than given. Format raw only.
	ForceRaw bool `json:"forceRaw,omitempty"`
}

// RegisterImageRequest is POST /v1/images. The answer is the image, pending; it
// becomes available or failed.
type RegisterImageRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Disks       []Disk `json:"disks"`
	// Kernel and Initrd are files the client opens and passes as KernelFile and
	// InitrdFile; they never go to kilnd.
	Kernel         string            `json:"-"`
	Initrd         string            `json:"-"`
	KernelFile     *int              `json:"kernelFile,omitempty"` // index of the passed file
	InitrdFile     *int              `json:"initrdFile,omitempty"` // index of the passed file
	Cmdline        string            `json:"cmdline,omitempty"`
	Architecture   string            `json:"architecture,omitempty"`
	BootMode       string            `json:"bootMode,omitempty"`
	RootDeviceType string            `json:"rootDeviceType,omitempty"`
	SSHUser        string            `json:"sshUser,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	// UEFIData is a UEFI variable store (an OVMF flash image) the client opens and
	// passes as UEFIDataFile: the variables instances start with. SecureBoot and
	// TPMSupport ("v2.0") need a UEFI boot mode.
	UEFIData     string `json:"-"`
	UEFIDataFile *int   `json:"uefiDataFile,omitempty"` // index of the passed file
	SecureBoot   bool   `json:"secureBoot,omitempty"`
	TPMSupport   string `json:"tpmSupport,omitempty"`
}

// TagRequest is POST /v1/{images|instances|volumes|snapshots|key-pairs}/{id}/tags: set
// these tags (adding or replacing). The answer is the resource.
type TagRequest struct {
	Tags map[string]string `json:"tags"`
}

// DescriptionRequest is POST /v1/images/{image}/description: the image's new description.
type DescriptionRequest struct {
	Description string `json:"description"`
}

// UntagRequest is POST /v1/{images|instances|volumes|snapshots|key-pairs}/{id}/untag:
// remove these tag keys (a key the resource lacks is no error). The answer is the resource.
type UntagRequest struct {
	Keys []string `json:"keys"`
}

// Deleted answers a DELETE: the id of what is gone (the request may have named it by
// name or by the start of its id).
type Deleted struct {
	ID string `json:"id"`
	// RecycleBinExitTime is set when a retention rule kept what was deleted in the
	// recycle bin: it may be restored until then.
	RecycleBinExitTime *time.Time `json:"recycleBinExitTime,omitempty"`
}

// GCResult is POST /v1/gc.
type GCResult struct {
	BlobsRemoved   int   `json:"blobsRemoved"`
	BytesFreed     int64 `json:"bytesFreed"`
	IngestsRemoved int   `json:"ingestsRemoved"`
}

// MaxBodySize bounds every request body.
const MaxBodySize = 1 << 20

// InstanceType is a named size.
type InstanceType struct {
	Name      string `json:"name"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memoryMiB"`
}

// Instance is an instance as the API shows it.
type Instance struct {
	ID                  string                       `json:"id"`
	Name                string                       `json:"name"`
	ImageID             string                       `json:"imageId"`
	OwnerID             string                       `json:"ownerId"`
	State               string                       `json:"state"`
	StateReason         string                       `json:"stateReason,omitempty"`
	InstanceType        string                       `json:"instanceType,omitempty"`
	CPUs                int                          `json:"cpus"`
	MemoryMiB           int                          `json:"memoryMiB"`
	Accelerator         string                       `json:"accelerator"`
	RootDeviceType      string                       `json:"rootDeviceType"`
	RootDeviceName      string                       `json:"rootDeviceName"`
	BlockDeviceMappings []InstanceBlockDeviceMapping `json:"blockDeviceMappings"`
	LaunchTime          time.Time                    `json:"launchTime"`
	PID                 int                          `json:"pid,omitempty"`
	// Ready: the instance is running and, since QEMU last started (or the instance was
	// last rebooted), its guest has printed "KILN-GUEST ready" or cloud-init's final
	// line ("Cloud-init v. … finished at …") on its serial console.
	Ready bool `json:"ready,omitempty"`
	// ForceOffAt is set while a stop or termination waits for the guest to shut down
	// when asked (through its agent, else by the power button): when kilnd stops waiting
	// and forces it off.
	ForceOffAt *time.Time `json:"forceOffAt,omitempty"`
	// CreatingImage is the image a create-image operation is making of the instance;
	// while it is set a running instance may be stopped for it and started again.
	CreatingImage string `json:"creatingImage,omitempty"`
	// SSHPort is the loopback port forwarded to the guest's port 22, the instance's own
	// for its life; Ports are those published (--publish), SSH's first.
	SSHPort int    `json:"sshPort,omitempty"`
	Ports   []Port `json:"ports,omitempty"`
	KeyName string `json:"keyName,omitempty"`
	// SSHUser is who kiln ssh logs in as: the image's default user, else the one
	// cloud-init named on the console. SSHHostKeys are the guest's host keys as its
	// console showed them (known_hosts keys): kiln ssh checks the guest against them.
	SSHUser     string   `json:"sshUser,omitempty"`
	SSHHostKeys []string `json:"sshHostKeys,omitempty"`
	// MetadataTokens: optional or required (RunInstancesRequest.MetadataTokens).
	MetadataTokens string `json:"metadataTokens"`
	// BootMode is the mode the instance boots with (legacy-bios or uefi: an image's
	// uefi-preferred boots uefi); SecureBoot and TPM say what its firmware has.
	BootMode   string            `json:"bootMode"`
	SecureBoot bool              `json:"secureBoot,omitempty"`
	TPM        bool              `json:"tpm,omitempty"`
	Tags       map[string]string `json:"tags"`
}

// InstanceBlockDeviceMapping is one volume of an instance.
type InstanceBlockDeviceMapping struct {
	DeviceName          string `json:"deviceName"`
	VolumeID            string `json:"volumeId"`
	DeleteOnTermination bool   `json:"deleteOnTermination"`
}

// VolumeSpec is a volume of a launch: a blank one (RunInstancesRequest.Volumes), or a
// change of one of the image's (RunInstancesRequest.Mappings: a larger size, 0 keeping
// the snapshot's).
type VolumeSpec struct {
	DeviceName string `json:"deviceName"`
	SizeGiB    int64  `json:"sizeGiB"`
	// DeleteOnTermination, when set, says whether the volume goes with the instance
	// (default: the image's mapping says; a blank volume goes).
	DeleteOnTermination *bool `json:"deleteOnTermination,omitempty"`
}

// RunInstancesRequest is POST /v1/instances. The answer is the instances, running.
type RunInstancesRequest struct {
	Image        string       `json:"image"` // an ami- id or a name
	Name         string       `json:"name,omitempty"`
	InstanceType string       `json:"instanceType,omitempty"`
	CPUs         *int         `json:"cpus,omitempty"`      // nil: the type's
	MemoryMiB    *int         `json:"memoryMiB,omitempty"` // nil: the type's
	Count        int          `json:"count,omitempty"`     // 0 means 1
	UserData     []byte       `json:"userData,omitempty"`  // base64 in JSON
	Volumes      []VolumeSpec `json:"volumes,omitempty"` // blank volumes, on devices the image has none
	// Mappings change volumes of the image's block device mapping (by device name).
	Mappings []VolumeSpec `json:"mappings,omitempty"`
	// Publish are host ports forwarded to the guest's (kiln run --publish); with one
	// instance only.
	Publish []Port `json:"publish,omitempty"`
	// KeyName is a key pair of the caller's whose public key the guest gets (cloud-init's
	// public-keys, for its default user).
	KeyName string `json:"keyName,omitempty"`
	// MetadataTokens is EC2's HttpTokens: optional (the default: IMDSv1 and v2) or
	// required (the metadata service answers only requests with an IMDSv2 token).
	MetadataTokens string            `json:"metadataTokens,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
}

// Metadata token settings (RunInstancesRequest.MetadataTokens).
const (
	MetadataTokensOptional = "optional"
	MetadataTokensRequired = "required"
)

// KeyPair is an SSH key pair, as the cloud's: kilnd keeps its public key and fingerprint;
// the private key of a pair it made is in create's answer (KeyMaterial) and nowhere else.
type KeyPair struct {
	KeyPairID      string            `json:"keyPairId"`
	KeyName        string            `json:"keyName"`
	KeyType        string            `json:"keyType"` // ed25519 or rsa
	KeyFingerprint string            `json:"keyFingerprint"`
	PublicKey      string            `json:"publicKey"` // in authorized_keys form
	OwnerID        string            `json:"ownerId"`
	CreateTime     time.Time         `json:"createTime"`
	KeyMaterial    string            `json:"keyMaterial,omitempty"`
	Tags           map[string]string `json:"tags"`
}

// CreateKeyPairRequest is POST /v1/key-pairs: kilnd makes a pair of Type (ed25519 by
// default), or, with PublicKey (authorized_keys form), imports that key.
type CreateKeyPairRequest struct {
	Name      string            `json:"name"`
	Type      string            `json:"type,omitempty"`
	PublicKey string            `json:"publicKey,omitempty"`
	Tags      map[string]string `json:"tags,omitempty"`
}

// Port is a host port forwarded to a port of the guest, on the instance's user-mode
// network.
type Port struct {
	Protocol  string `json:"protocol"` // tcp or udp
	HostIP    string `json:"hostIp"`   // an address of the host; 127.0.0.1 when not given
	HostPort  int    `json:"hostPort"`
	GuestPort int    `json:"guestPort"`
}

// StopGrace is how long a stop or termination waits for the guest to shut down after
// the ACPI power button before it forces it off.
const StopGrace = 30 * time.Second

// StopRequest is POST /v1/instances/{instance}/stop and /terminate.
type StopRequest struct {
	Force bool `json:"force,omitempty"` // skip the guest's clean shutdown
}

// ExecRequest is POST /v1/instances/{instance}/exec: a program the guest's agent
// (qemu-guest-agent) runs, without a shell and without the network.
type ExecRequest struct {
	Command []string `json:"command"`         // the program (looked up in the agent's PATH) and its arguments
	Env     []string `json:"env,omitempty"`   // NAME=value: the program's whole environment
	Stdin   []byte   `json:"stdin,omitempty"` // at most MaxExecInput bytes
	// TimeoutSeconds, when set, bounds the wait for the program; it goes on running
	// in the guest past it.
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// MaxExecInput bounds an exec's standard input; MaxExecTimeoutSeconds its timeout (a day).
const (
	MaxExecInput          = 512 << 10
	MaxExecTimeoutSeconds = 86400
)

// ExecResult is how the program ended and what it printed (the agent keeps at most
// 16 MiB of each stream), or, TimedOut, that it still ran when the timeout passed.
type ExecResult struct {
	PID             int    `json:"pid"`                // in the guest
	TimedOut        bool   `json:"timedOut,omitempty"` // it goes on in the guest
	ExitCode        int    `json:"exitCode"`           // -1 when a signal ended it
	Signal          int    `json:"signal,omitempty"`   // the signal that ended it
	Stdout          []byte `json:"stdout"`
	Stderr          []byte `json:"stderr"`
	StdoutTruncated bool   `json:"stdoutTruncated,omitempty"`
	StderrTruncated bool   `json:"stderrTruncated,omitempty"`
}

// MaxUserData bounds user data (after base64 decoding).
const MaxUserData = 256 << 10

// MaxVolumeGiB bounds a volume's size, in GiB (16 TiB).
const MaxVolumeGiB = 16 << 10

// CreateImageRequest is POST /v1/instances/{instance}/create-image. The answer is the
// image, pending.
type CreateImageRequest struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	NoReboot    bool              `json:"noReboot,omitempty"`
	// SnapshotTags are the tags of the snapshots the image's volumes are captured into.
	SnapshotTags map[string]string `json:"snapshotTags,omitempty"`
}

// CopyImageRequest is POST /v1/images/{image}/copy.
type CopyImageRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	CopyTags    bool   `json:"copyTags,omitempty"`
}

// Snapshot is a snapshot as the API shows it.
type Snapshot struct {
	ID          string            `json:"id"`
	OwnerID     string            `json:"ownerId"`
	Description string            `json:"description,omitempty"`
	VolumeSize  int64             `json:"volumeSize"`  // GiB
	StorageSize int64             `json:"storageSize"` // bytes its own layer takes
	Layer       string            `json:"layer"`
	Chain       []string          `json:"chain"`
	ImageID     string            `json:"imageId,omitempty"` // made for
	Tags        map[string]string `json:"tags"`
	StartTime   time.Time         `json:"startTime"`
}

// Volume is a volume as the API shows it.
type Volume struct {
	ID                  string            `json:"id"`
	OwnerID             string            `json:"ownerId"`
	State               string            `json:"state"` // available or in-use
	SizeGiB             int64             `json:"size"`
	SnapshotID          string            `json:"snapshotId,omitempty"`
	InstanceID          string            `json:"instanceId,omitempty"`
	DeviceName          string            `json:"deviceName,omitempty"`
	DeleteOnTermination bool              `json:"deleteOnTermination"`
	CreateTime          time.Time         `json:"createTime"`
	Tags                map[string]string `json:"tags"`
}

// CreateVolumeRequest is POST /v1/volumes: a blank volume of SizeGiB, or one made from
// a snapshot (at least the snapshot's size).
type CreateVolumeRequest struct {
	SizeGiB    int64             `json:"size,omitempty"`
	SnapshotID string            `json:"snapshotId,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
}

// AttachVolumeRequest is POST /v1/volumes/{volume}/attach.
type AttachVolumeRequest struct {
	Instance   string `json:"instance"`
	DeviceName string `json:"deviceName,omitempty"` // default: the first free /dev/vdX
}

// RegistryAuth is the credential of one push or pull, as the client found it for the
// registry (docker's config or a credential helper, read with the caller's rights).
// kilnd uses it for that request only, never stores it and never logs it.
type RegistryAuth struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identityToken,omitempty"` // an OAuth2 refresh token
	RegistryToken string `json:"registryToken,omitempty"` // a bearer token for the registry
}

// Registry says how kilnd reaches a registry for one request.
type Registry struct {
	Auth *RegistryAuth `json:"auth,omitempty"`
	// CACerts are PEM certificates trusted for this request besides the system's (the
	// client reads them from --ca-file), at most MaxCACerts bytes.
	CACerts   string `json:"caCerts,omitempty"`
	PlainHTTP bool   `json:"plainHttp,omitempty"` // http://, only when asked
}

// MaxCACerts bounds the PEM certificates a push or pull request may carry.
const MaxCACerts = 256 << 10

// MediaTypeProgressStream is the answer to a push or pull asked with ?progress=1 once it
// has begun to move bytes: one StreamEvent per line (JSON lines), progress events about
// every quarter second, then one event with the result or the error. An error found
// before any byte moves is an ordinary error answer (its HTTP status and Error body),
// as without ?progress.
const MediaTypeProgressStream = "application/x-ndjson"

// StreamEvent is one line of a progress stream: exactly one field is set.
type StreamEvent struct {
	Progress *Progress       `json:"progress,omitempty"` // bytes moved, of the bytes to move
	Result   json.RawMessage `json:"result,omitempty"`   // what the call answers without ?progress
	Error    *Error          `json:"error,omitempty"`    // why it failed; nothing is left of a failed pull
}

// PushImageRequest is the body of POST /v1/images/{image}/push.
type PushImageRequest struct {
	Reference string `json:"reference"` // REGISTRY/REPOSITORY[:TAG|@DIGEST]
	// ContainerDisk pushes the root device as a KubeVirt containerDisk (one tar layer
	// holding disk/disk.qcow2, the chain flattened) instead of the kiln image.
	ContainerDisk bool `json:"containerDisk,omitempty"`
	Registry
}

// PushImageResult is what a push did.
type PushImageResult struct {
	ImageID      string `json:"imageId"`
	Reference    string `json:"reference"`
	Digest       string `json:"digest"`       // the manifest's
	Blobs        int    `json:"blobs"`        // the manifest's config and layers
	BlobsPushed  int    `json:"blobsPushed"`  // sent: the registry lacked them
	BytesPushed  int64  `json:"bytesPushed"`  // their bytes
	BlobsSkipped int    `json:"blobsSkipped"` // the registry had them
	BlobsMounted int    `json:"blobsMounted"` // the registry took them from the repository the image was pulled from
}

// PullImageRequest is the body of POST /v1/images/pull.
type PullImageRequest struct {
	Reference   string            `json:"reference"`
	Name        string            `json:"name,omitempty"` // default: from the reference
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Registry
}

// ExportImageRequest is the body of POST /v1/images/{image}/export, which carries one
// passed descriptor (SCM_RIGHTS): the file, opened for writing by the caller, that
// kilnd writes the OCI image layout tar to. kilnd never opens a path for it.
type ExportImageRequest struct {
	File int `json:"file"` // the passed descriptor's index (0)
}

// ExportImageResult is what an export wrote.
type ExportImageResult struct {
	ImageID string `json:"imageId"`
	Digest  string `json:"digest"` // the manifest's
	Bytes   int64  `json:"bytes"`  // the tar's
}

// ImportImageRequest is the body of POST /v1/images/import, which carries one passed
// descriptor: the OCI image layout tar, opened for reading by the caller. It is read
// with a pull's checks; the answer is the new image (an Image), or a progress stream
// with ?progress=1 as a pull's.
type ImportImageRequest struct {
	File        int               `json:"file"`   // the passed descriptor's index (0)
	Source      string            `json:"source"` // the file's name, for the record (sourceRef oci-archive:NAME)
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
}

// An attached console (POST /v1/instances/{instance}/console/attach) is an HTTP
// connection switched to ConsoleProtocol: the request carries Connection: Upgrade and
// Upgrade: ConsoleProtocol; kilnd answers ConsoleSwitch (101 Switching Protocols, the
// instance's id in ConsoleInstanceHeader), and from then on the connection carries the
// serial console's bytes both ways, unframed. Either side ends it by closing the
// connection; kilnd also does when the instance's QEMU exits.
const (
	ConsoleProtocol       = "kiln-console"
	ConsoleInstanceHeader = "Kiln-Instance"
)

// ConsoleSwitch is kilnd's answer switching a console attach's connection over.
func ConsoleSwitch(instanceID string) string {
	return fmt.Sprintf("HTTP/1.1 %d %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n\r\n",
		http.StatusSwitchingProtocols, http.StatusText(http.StatusSwitchingProtocols), ConsoleProtocol, ConsoleInstanceHeader, instanceID)
}

// AccessKey is an access key for kilnd's EC2 endpoint (requests signed with Signature
// Version 4 act as the key's Unix user). SecretAccessKey is in create's answer and
// nowhere else.
type AccessKey struct {
	AccessKeyID     string    `json:"accessKeyId"`
	SecretAccessKey string    `json:"secretAccessKey,omitempty"`
	OwnerID         string    `json:"ownerId"`
	CreateTime      time.Time `json:"createTime"`
}

// An answer given in process (kilnd's EC2 door calls the API's handlers directly) need
// not be encoded: a ResponseWriter that is a ValueWriter takes the answer's value as it
// is, and the body it becomes is a ValueBody, which gives the value back (and reads as
// its JSON for any other reader).
type (
	ValueWriter interface{ WriteValue(status int, v any) }
	ValueBody   interface{ Value() any }
)
