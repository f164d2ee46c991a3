package daemon_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"kiln/daemon/ec2"
	"kiln/internal/ids"
	"kiln/internal/kilntest"
)

// The service models of EC2 that Debian's packages ship (make deps): botocore's, which
// boto3 runs on, and the newer copy inside awscli, which the aws CLI runs on.
var ec2Models = []string{
	"/usr/lib/python3/dist-packages/botocore/data/ec2/2016-11-15/service-2.json",
	"/usr/lib/python3/dist-packages/awscli/botocore/data/ec2/2016-11-15/service-2.json",
}

// ec2Model is what the shape test reads of a service model.
type ec2Model struct {
	path     string
	checked  int // elements checked against a shape
	Metadata struct {
		Protocol     string `json:"protocol"`
		APIVersion   string `json:"apiVersion"`
		XMLNamespace string `json:"xmlNamespace"`
	} `json:"metadata"`
	Operations map[string]struct {
		Output *struct {
			Shape string `json:"shape"`
		} `json:"output"`
	} `json:"operations"`
	Shapes map[string]modelShape `json:"shapes"`
}

type modelShape struct {
	Type      string                 `json:"type"`
	Members   map[string]modelMember `json:"members"`
	Member    *modelMember           `json:"member"`
	Enum      []string               `json:"enum"`
	Required  []string               `json:"required"`
	Flattened bool                   `json:"flattened"`
}

type modelMember struct {
	Shape        string `json:"shape"`
	LocationName string `json:"locationName"`
}

// loadEC2Models reads the models that are on this machine; one missing fails the test
// under CI (make deps installs both), and none at all ends it as kilntest.Missing does.
func loadEC2Models(t *testing.T) []*ec2Model {
	t.Helper()
	var out []*ec2Model
	for _, p := range ec2Models {
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			if os.Getenv("CI") != "" {
				t.Errorf("EC2's service model %s is missing: run 'make deps' (python3-botocore, awscli)", p)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		m := &ec2Model{path: p}
		if err := json.Unmarshal(b, m); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if m.Metadata.Protocol != "ec2" || m.Metadata.APIVersion != ec2.APIVersion {
			t.Fatalf("%s: protocol %q, version %q; want ec2 %s", p, m.Metadata.Protocol, m.Metadata.APIVersion, ec2.APIVersion)
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		kilntest.Missing(t, "no EC2 service model (%s): run 'make deps' (python3-botocore, awscli)", strings.Join(ec2Models, ", "))
	}
	return out
}

// notInModel are elements EC2 answers that these models do not describe yet (botocore
// skips elements it does not know): DeleteKeyPair's keyPairId came with a later API
// model (DeleteKeyPairResult) than Debian's botocore and awscli carry. Actions the
// models give no output shape answer <return>, as EC2's API reference shows them.
var notInModel = map[string][]string{"DeleteKeyPair": {"keyPairId"}}

// ownEnums are enumerations kiln answers its own values of on purpose: its instance
// types are its own sizes (kiln run --type; DescribeInstanceTypes lists them), and the
// SDKs take any string there.
var ownEnums = map[string]bool{"InstanceType": true}

// ec2ErrorCodes are the error codes of EC2's API reference ("Error codes for the Amazon
// EC2 API": the common client errors, those of specific actions, and the server errors)
// that kiln's door answers; the models list no errors for EC2.
var ec2ErrorCodes = []string{
	// common client errors
	"AuthFailure", "Blocked", "DryRunOperation", "IdempotentParameterMismatch", "IncompleteSignature", "InvalidAction",
	"InvalidCharacter", "InvalidClientTokenId", "InvalidPaginationToken", "InvalidParameter", "InvalidParameterCombination",
	"InvalidParameterValue", "InvalidQueryParameter", "MalformedQueryString", "MissingAction", "MissingAuthenticationToken",
	"MissingParameter", "OptInRequired", "PendingVerification", "RequestExpired", "UnauthorizedOperation", "UnknownParameter",
	"UnsupportedOperation", "UnsupportedProtocol", "ValidationError", "SignatureDoesNotMatch",
	// client errors of specific actions
	"IncorrectInstanceState", "IncorrectState", "InstanceLimitExceeded", "InvalidAMIID.Malformed", "InvalidAMIID.NotFound",
	"InvalidAMIID.Unavailable", "InvalidID", "InvalidInstanceID.Malformed", "InvalidInstanceID.NotFound",
	"InvalidKeyPair.Duplicate", "InvalidKeyPair.Format", "InvalidKeyPair.NotFound", "InvalidSnapshot.NotFound",
	"InvalidSnapshotID.Malformed", "InvalidVolume.NotFound", "InvalidVolumeID.Malformed", "VolumeInUse", "ResourceLimitExceeded",
	// server errors
	"InternalError", "InternalFailure", "RequestLimitExceeded", "ServiceUnavailable", "Unavailable",
}

// doorActions are the actions daemon/ec2/actions.go implements: the keys of its
// actions map, read from the source so that an action added there fails this test
// until the test runs it.
func doorActions(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "ec2/actions.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "actions" || len(vs.Values) != 1 {
			return true
		}
		for _, e := range vs.Values[0].(*ast.CompositeLit).Elts {
			if lit, ok := e.(*ast.KeyValueExpr).Key.(*ast.BasicLit); ok {
				name, _ := strconv.Unquote(lit.Value)
				out = append(out, name)
			}
		}
		return false
	})
	if len(out) < 10 {
		t.Fatalf("found %d actions in ec2/actions.go: has its actions map moved?", len(out))
	}
	return out
}

// shapeCheck runs actions against a kilnd's EC2 endpoint and checks every answer
// against the models.
type shapeCheck struct {
	t      *testing.T
	door   *signedDoor
	models []*ec2Model
	ran    map[string]bool // actions answered with success
}

var requestIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ok runs an action that must succeed and returns its answer once it fits every model.
func (s *shapeCheck) ok(action string, kv ...string) *xmlNode {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	status, body, err := s.door.do(ctx, action, kv...)
	if err != nil {
		s.t.Fatalf("%s: %v", action, err)
	}
	if status != http.StatusOK {
		s.t.Fatalf("%s %q: %d\n%s", action, kv, status, body)
	}
	root, err := parseXML(body)
	if err != nil {
		s.t.Fatalf("%s: the answer is not XML: %v\n%s", action, err, body)
	}
	for _, m := range s.models {
		for _, p := range m.checkAnswer(action, root) {
			s.t.Errorf("%s (%s): %s", action, m.path, p)
		}
	}
	if s.t.Failed() {
		s.t.Logf("%s's answer:\n%s", action, body)
	}
	s.ran[action] = true
	return root
}

// fails runs an action that must fail with code and the HTTP status EC2 gives it, and
// checks the error document.
func (s *shapeCheck) fails(door *signedDoor, code string, status int, action string, kv ...string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, body, err := door.do(ctx, action, kv...)
	if err != nil {
		s.t.Fatalf("%s: %v", action, err)
	}
	root, err := parseXML(body)
	if err != nil {
		s.t.Fatalf("%s: the error is not XML: %v\n%s", action, err, body)
	}
	for _, p := range checkError(root) {
		s.t.Errorf("%s: %s\n%s", action, p, body)
	}
	if c := root.get("Errors/Error/Code"); c != code || got != status {
		s.t.Errorf("%s %q: %d %s; want %d %s\n%s", action, kv, got, c, status, code, body)
	}
}

// checkError lists what is wrong with an error answer: EC2's document is
// <Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>,
// with a code of EC2's.
func checkError(root *xmlNode) []string {
	var probs []string
	if root.name.Local != "Response" {
		probs = append(probs, fmt.Sprintf("root <%s>, want <Response>", root.name.Local))
	}
	if got := names(root); !slices.Equal(got, []string{"Errors", "RequestID"}) {
		probs = append(probs, fmt.Sprintf("Response holds %v, want [Errors RequestID]", got))
	}
	if id := root.get("RequestID"); !requestIDPattern.MatchString(id) {
		probs = append(probs, fmt.Sprintf("RequestID %q is not a UUID", id))
	}
	errs := root.all("Errors/Error")
	if len(errs) != 1 || !slices.Equal(names(root.all("Errors")[0]), []string{"Error"}) {
		probs = append(probs, "Errors holds other than one Error")
	}
	for _, e := range errs {
		if got := names(e); !slices.Equal(got, []string{"Code", "Message"}) {
			probs = append(probs, fmt.Sprintf("Error holds %v, want [Code Message]", got))
		}
		if c := e.get("Code"); !slices.Contains(ec2ErrorCodes, c) {
			probs = append(probs, fmt.Sprintf("code %q is not one of EC2's", c))
		}
		if strings.TrimSpace(e.get("Message")) == "" {
			probs = append(probs, "no Message")
		}
	}
	return probs
}

func names(n *xmlNode) []string {
	var out []string
	for _, k := range n.kids {
		out = append(out, k.name.Local)
	}
	return out
}

// checkAnswer lists what is wrong with a success answer to action: the root is
// ACTION+"Response" in EC2's namespace, with a requestId and the members of the
// action's output shape, each by its locationName and each as its shape says.
func (m *ec2Model) checkAnswer(action string, root *xmlNode) []string {
	var probs []string
	op, ok := m.Operations[action]
	if !ok {
		return []string{"the model has no such operation"}
	}
	if root.name.Local != action+"Response" || root.name.Space != ec2.Namespace {
		probs = append(probs, fmt.Sprintf("root {%s}%s, want {%s}%sResponse", root.name.Space, root.name.Local, ec2.Namespace, action))
	}
	if strings.TrimRight(m.Metadata.XMLNamespace, "/") != strings.TrimRight(ec2.Namespace, "/") {
		probs = append(probs, fmt.Sprintf("the model's namespace is %s", m.Metadata.XMLNamespace))
	}
	if strings.TrimSpace(root.text) != "" {
		probs = append(probs, fmt.Sprintf("text %q in the root", strings.TrimSpace(root.text)))
	}
	// requestId is the protocol's (botocore reads it into ResponseMetadata), not a member.
	var rest []*xmlNode
	ids := 0
	for _, k := range root.kids {
		if k.name.Local == "requestId" {
			ids++
			if !requestIDPattern.MatchString(k.text) {
				probs = append(probs, fmt.Sprintf("requestId %q is not a UUID", k.text))
			}
			continue
		}
		if slices.Contains(notInModel[action], k.name.Local) {
			continue
		}
		rest = append(rest, k)
	}
	if ids != 1 {
		probs = append(probs, fmt.Sprintf("%d requestId elements", ids))
	}
	if op.Output == nil {
		for _, k := range rest {
			if k.name.Local != "return" || k.text != "true" && k.text != "false" {
				probs = append(probs, fmt.Sprintf("<%s>%s</%s>: the model gives %s no output; EC2 answers <return>", k.name.Local, k.text, k.name.Local, action))
			}
		}
		return probs
	}
	return append(probs, m.checkMembers(action+"Response", rest, op.Output.Shape)...)
}

// checkMembers checks the elements kids of a structure of shape name.
func (m *ec2Model) checkMembers(path string, kids []*xmlNode, name string) []string {
	sh, ok := m.Shapes[name]
	if !ok || sh.Type != "structure" {
		return []string{fmt.Sprintf("%s: shape %s is not a structure in the model", path, name)}
	}
	byXML := map[string]string{}
	for member, mm := range sh.Members {
		byXML[xmlName(member, mm)] = member
	}
	var probs []string
	seen := map[string]int{}
	for _, k := range kids {
		member, ok := byXML[k.name.Local]
		if !ok {
			probs = append(probs, fmt.Sprintf("%s/%s: not a member of %s", path, k.name.Local, name))
			continue
		}
		if seen[member]++; seen[member] == 2 {
			probs = append(probs, fmt.Sprintf("%s/%s: given more than once", path, k.name.Local))
		}
		probs = append(probs, m.checkValue(path+"/"+k.name.Local, k, sh.Members[member].Shape)...)
	}
	for _, r := range sh.Required {
		if seen[r] == 0 {
			probs = append(probs, fmt.Sprintf("%s: the required member %s (<%s>) is missing", path, r, xmlName(r, sh.Members[r])))
		}
	}
	return probs
}

// xmlName is a member's element name in EC2's protocol: its locationName, else its
// name.
func xmlName(member string, mm modelMember) string {
	if mm.LocationName != "" {
		return mm.LocationName
	}
	return member
}

// checkValue checks one element against the shape it stands for.
func (m *ec2Model) checkValue(path string, n *xmlNode, name string) []string {
	m.checked++
	sh, ok := m.Shapes[name]
	if !ok {
		return []string{fmt.Sprintf("%s: shape %s is not in the model", path, name)}
	}
	text := strings.TrimSpace(n.text)
	if sh.Type == "structure" || sh.Type == "list" {
		if text != "" {
			return []string{fmt.Sprintf("%s: text %q in a %s", path, text, sh.Type)}
		}
	} else if len(n.kids) > 0 {
		return []string{fmt.Sprintf("%s: elements in a %s (%s)", path, sh.Type, name)}
	}
	bad := func(want string) []string {
		return []string{fmt.Sprintf("%s: %q is not %s (%s)", path, n.text, want, name)}
	}
	switch sh.Type {
	case "structure":
		return m.checkMembers(path, n.kids, name)
	case "list":
		if sh.Flattened {
			return []string{fmt.Sprintf("%s: flattened lists are not EC2's", path)}
		}
		item := xmlName("member", *sh.Member)
		var probs []string
		for i, k := range n.kids {
			if k.name.Local != item {
				probs = append(probs, fmt.Sprintf("%s/%s: a list's entries are <%s>", path, k.name.Local, item))
				continue
			}
			probs = append(probs, m.checkValue(fmt.Sprintf("%s/%s[%d]", path, item, i), k, sh.Member.Shape)...)
		}
		return probs
	case "string":
		if len(sh.Enum) > 0 && !ownEnums[name] && !slices.Contains(sh.Enum, n.text) {
			return bad("one of " + strings.Join(sh.Enum, ", "))
		}
	case "integer":
		if _, err := strconv.ParseInt(n.text, 10, 32); err != nil {
			return bad("an integer")
		}
	case "long":
		if _, err := strconv.ParseInt(n.text, 10, 64); err != nil {
			return bad("a long")
		}
	case "boolean":
		if n.text != "true" && n.text != "false" {
			return bad("true or false")
		}
	case "double", "float":
		if _, err := strconv.ParseFloat(n.text, 64); err != nil {
			return bad("a number")
		}
	case "timestamp":
		if _, err := time.Parse(time.RFC3339Nano, n.text); err != nil {
			return bad("an ISO 8601 time")
		}
	case "blob":
		if _, err := base64.StdEncoding.DecodeString(n.text); err != nil {
			return bad("base64")
		}
	default:
		return []string{fmt.Sprintf("%s: shape type %s (%s) is not one EC2 answers", path, sh.Type, name)}
	}
	return nil
}

// TestEC2Shapes runs every action the EC2 door implements against a kilnd with real
// resources (the test guest registered, one instance launched, a volume, key pairs,
// tags, a captured image and its copy) and checks each answer against EC2's service
// models as botocore and the aws CLI carry them, and EC2's error documents.
func TestEC2Shapes(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a guest")
	}
	models := loadEC2Models(t)
	k := kilndIn(t, shortDir(t), "debug")
	k.Args = []string{"--ec2-listen", "127.0.0.1:0"}
	k.Start()
	t.Cleanup(k.KillQEMUs)
	base := registerGuest(t, k, "kiln-guest")
	door := openDoor(t, k)
	s := &shapeCheck{t: t, door: door, models: models, ran: map[string]bool{}}
	zone := door.region + "a"
	ctx := ctxT(t)

	// The region, its zone, kiln's types and the account.
	if got := s.ok("DescribeRegions").get("regionInfo/item/regionName"); got != door.region {
		t.Errorf("DescribeRegions: %q, want %s", got, door.region)
	}
	s.ok("DescribeAvailabilityZones")
	if got := len(s.ok("DescribeInstanceTypes").all("instanceTypeSet/item")); got < 2 {
		t.Errorf("DescribeInstanceTypes: %d types", got)
	}
	s.ok("DescribeAccountAttributes")

	// Images and their attributes.
	if got := s.ok("DescribeImages", "Owner.1", "self", "Filter.1.Name", "name", "Filter.1.Value.1", "kiln-*").get("imagesSet/item/imageId"); got != base.ID {
		t.Errorf("DescribeImages by owner and name: %q, want %s", got, base.ID)
	}
	s.ok("DescribeImages", "ImageId.1", base.ID)
	s.ok("ModifyImageAttribute", "ImageId", base.ID, "Description.Value", "the test guest")
	s.ok("ModifyImageAttribute", "ImageId", base.ID, "LaunchPermission.Add.1.Group", "all")
	for _, attr := range []string{"launchPermission", "description", "bootMode", "blockDeviceMapping", "kernel", "ramdisk"} {
		s.ok("DescribeImageAttribute", "ImageId", base.ID, "Attribute", attr)
	}
	if got := s.ok("DescribeImageAttribute", "ImageId", base.ID, "Attribute", "launchPermission").get("launchPermission/item/group"); got != "all" {
		t.Errorf("launch permission after adding all: %q", got)
	}
	s.ok("ResetImageAttribute", "ImageId", base.ID, "Attribute", "launchPermission")

	// Key pairs: one made, one imported.
	kp := s.ok("CreateKeyPair", "KeyName", "shapes", "TagSpecification.1.ResourceType", "key-pair",
		"TagSpecification.1.Tag.1.Key", "team", "TagSpecification.1.Tag.1.Value", "kiln")
	if !strings.Contains(kp.get("keyMaterial"), "PRIVATE KEY") {
		t.Errorf("CreateKeyPair gave no private key")
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	s.ok("ImportKeyPair", "KeyName", "imported", "PublicKeyMaterial", base64.StdEncoding.EncodeToString(ssh.MarshalAuthorizedKey(sshPub)))
	if got := len(s.ok("DescribeKeyPairs", "IncludePublicKey", "true").all("keySet/item")); got != 2 {
		t.Errorf("DescribeKeyPairs: %d pairs, want 2", got)
	}

	// One instance, with everything RunInstances takes.
	run := s.ok("RunInstances", "ImageId", base.ID, "InstanceType", "nano", "MinCount", "1", "MaxCount", "1", "KeyName", "shapes",
		"UserData", base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\necho KILN-GUEST shapes\n")), "ClientToken", "shapes-1",
		"Placement.AvailabilityZone", zone, "MetadataOptions.HttpTokens", "required",
		"BlockDeviceMapping.1.DeviceName", "/dev/vda", "BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true",
		"TagSpecification.1.ResourceType", "instance", "TagSpecification.1.Tag.1.Key", "Name", "TagSpecification.1.Tag.1.Value", "shapes",
		"TagSpecification.2.ResourceType", "volume", "TagSpecification.2.Tag.1.Key", "Name", "TagSpecification.2.Tag.1.Value", "shapes-root")
	id := run.get("instancesSet/item/instanceId")
	if !ids.IsID("i-", id) {
		t.Fatalf("RunInstances gave instance %q", id)
	}
	waitState(t, k, id, "ready")
	if got := s.ok("DescribeInstances", "InstanceId.1", id).get("reservationSet/item/instancesSet/item/instanceState/code"); got != "16" {
		t.Errorf("DescribeInstances: state code %q, want 16", got)
	}
	if got := s.ok("DescribeInstances", "Filter.1.Name", "instance-state-name", "Filter.1.Value.1", "running",
		"Filter.2.Name", "tag:Name", "Filter.2.Value.1", "shapes").get("reservationSet/item/instancesSet/item/instanceId"); got != id {
		t.Errorf("DescribeInstances by state and tag: %q, want %s", got, id)
	}
	if got := s.ok("DescribeInstanceStatus", "InstanceId.1", id).get("instanceStatusSet/item/instanceStatus/status"); got != "ok" {
		t.Errorf("DescribeInstanceStatus of a ready guest: %q", got)
	}
	s.ok("DescribeInstanceStatus", "IncludeAllInstances", "true")
	out, err := base64.StdEncoding.DecodeString(s.ok("GetConsoleOutput", "InstanceId", id, "Latest", "true").get("output"))
	if err != nil || !strings.Contains(string(out), "KILN-GUEST shapes") {
		t.Errorf("GetConsoleOutput: %v, the user data's line not in:\n%s", err, kilntest.Tail(string(out), 10))
	}

	// A volume made, plugged into the running guest, out again, and deleted.
	vol := s.ok("CreateVolume", "AvailabilityZone", zone, "Size", "1", "VolumeType", "gp3",
		"TagSpecification.1.ResourceType", "volume", "TagSpecification.1.Tag.1.Key", "Name", "TagSpecification.1.Tag.1.Value", "data")
	volID := vol.get("volumeId")
	s.ok("DescribeVolumes")
	s.ok("AttachVolume", "VolumeId", volID, "InstanceId", id, "Device", "/dev/vdc")
	if got := s.ok("DescribeVolumes", "VolumeId.1", volID).get("volumeSet/item/attachmentSet/item/status"); got != "attached" {
		t.Errorf("DescribeVolumes of an attached volume: attachment %q", got)
	}
	s.ok("DetachVolume", "VolumeId", volID)
	s.ok("DeleteVolume", "VolumeId", volID)

	// Tags across kinds of resources.
	s.ok("CreateTags", "ResourceId.1", id, "ResourceId.2", base.ID, "Tag.1.Key", "stage", "Tag.1.Value", "shapes")
	if got := len(s.ok("DescribeTags", "Filter.1.Name", "key", "Filter.1.Value.1", "stage").all("tagSet/item")); got != 2 {
		t.Errorf("DescribeTags: %d tags, want 2", got)
	}
	if got := len(s.ok("DescribeTags", "Filter.1.Name", "resource-type", "Filter.1.Value.1", "volume").all("tagSet/item")); got != 1 {
		t.Errorf("DescribeTags of volumes: %d tags, want the root volume's", got)
	}
	s.ok("DeleteTags", "ResourceId.1", base.ID, "Tag.1.Key", "stage")

	// An image of the running instance (live: no second boot), its copy, the snapshots.
	capID := s.ok("CreateImage", "InstanceId", id, "Name", "shapes-capture", "NoReboot", "true",
		"TagSpecification.1.ResourceType", "image", "TagSpecification.1.Tag.1.Key", "from", "TagSpecification.1.Tag.1.Value", id).get("imageId")
	if _, err := k.WaitImage(guestCtx(t), capID, nil); err != nil {
		t.Fatalf("create image %s: %v\n%s", capID, err, k.Evidence(id))
	}
	copyID := s.ok("CopyImage", "SourceImageId", capID, "SourceRegion", door.region, "Name", "shapes-copy", "CopyImageTags", "true").get("imageId")
	if _, err := k.WaitImage(ctx, copyID, nil); err != nil {
		t.Fatalf("copy image %s: %v", copyID, err)
	}
	if got := len(s.ok("DescribeImages", "ImageId.1", capID, "ImageId.2", copyID).all("imagesSet/item")); got != 2 {
		t.Errorf("DescribeImages of the capture and its copy: %d images", got)
	}
	if got := len(s.ok("DescribeSnapshots", "Owner.1", "self").all("snapshotSet/item")); got < 2 {
		t.Errorf("DescribeSnapshots: %d snapshots, want the base's and the capture's", got)
	}
	s.ok("DeregisterImage", "ImageId", copyID)

	// The instance's life: stop, start, reboot, terminate.
	s.ok("StopInstances", "InstanceId.1", id)
	waitState(t, k, id, "stopped")
	s.ok("StartInstances", "InstanceId.1", id)
	waitState(t, k, id, "running")
	s.ok("RebootInstances", "InstanceId.1", id)
	s.ok("TerminateInstances", "InstanceId.1", id)
	waitState(t, k, id, "terminated")
	if got := s.ok("DescribeInstances", "InstanceId.1", id).get("reservationSet/item/instancesSet/item/instanceState/code"); got != "48" {
		t.Errorf("DescribeInstances of a terminated instance: state code %q, want 48", got)
	}
	s.ok("DeleteKeyPair", "KeyName", "shapes")
	s.ok("DeleteKeyPair", "KeyName", "imported")

	// Errors, in EC2's document and with its codes and statuses.
	wrong := *door
	wrong.secret = strings.Repeat("x", len(door.secret))
	s.fails(&wrong, "AuthFailure", http.StatusUnauthorized, "DescribeImages")
	s.fails(door, "InvalidInstanceID.NotFound", http.StatusBadRequest, "DescribeInstances", "InstanceId.1", ids.NewID("i-"))
	s.fails(door, "InvalidAMIID.Malformed", http.StatusBadRequest, "DescribeImages", "ImageId.1", "ami-nothex")
	s.fails(door, "UnknownParameter", http.StatusBadRequest, "DescribeImages", "Colour", "blue")
	s.fails(door, "InvalidAction", http.StatusBadRequest, "AllocateAddress")
	s.fails(door, "DryRunOperation", http.StatusPreconditionFailed, "RunInstances", "ImageId", base.ID, "MinCount", "1", "MaxCount", "1", "DryRun", "true")

	for _, m := range models {
		t.Logf("%s: %d elements of %d actions' answers checked", m.path, m.checked, len(s.ran))
	}
	for _, a := range doorActions(t) {
		if !s.ran[a] {
			t.Errorf("%s is implemented (daemon/ec2/actions.go) but this test never ran it", a)
		}
	}
}

// TestEC2ShapeCheck: the shape test's check finds what does not fit the model (it
// would pass anything otherwise).
func TestEC2ShapeCheck(t *testing.T) {
	models := loadEC2Models(t)
	const ns = ` xmlns="` + ec2.Namespace + `"`
	const id = "<requestId>0d3e3c8c-5f7a-4b9e-9c1e-3f7a2b6c8d9e</requestId>"
	good := `<DescribeVolumesResponse` + ns + `>` + id + `<volumeSet><item><volumeId>vol-1</volumeId><size>1</size>` +
		`<encrypted>false</encrypted><createTime>2026-11-30T12:00:00.000Z</createTime><status>available</status>` +
		`<attachmentSet/><tagSet><item><key>k</key><value>v</value></item></tagSet></item></volumeSet></DescribeVolumesResponse>`
	bad := map[string]string{
		"wrong namespace":   strings.Replace(good, ec2.Namespace, "http://example.com/", 1),
		"no requestId":      strings.Replace(good, id, "", 1),
		"unknown member":    strings.Replace(good, "<size>", "<colour>red</colour><size>", 1),
		"member twice":      strings.Replace(good, "<size>1</size>", "<size>1</size><size>1</size>", 1),
		"list entry name":   strings.Replace(good, "<tagSet><item><key>k</key><value>v</value></item>", "<tagSet><member><key>k</key><value>v</value></member>", 1),
		"not an integer":    strings.Replace(good, "<size>1</size>", "<size>1.5</size>", 1),
		"not a boolean":     strings.Replace(good, "<encrypted>false<", "<encrypted>no<", 1),
		"not a timestamp":   strings.Replace(good, "2026-11-30T12:00:00.000Z", "30/11/2026", 1),
		"not in the enum":   strings.Replace(good, "<status>available<", "<status>ready<", 1),
		"text in a list":    strings.Replace(good, "<attachmentSet/>", "<attachmentSet>x</attachmentSet>", 1),
		"wrong root":        strings.ReplaceAll(good, "DescribeVolumesResponse", "DescribeVolumesResult"),
		"no output: return": `<DeleteVolumeResponse` + ns + `>` + id + `<volumeId>vol-1</volumeId></DeleteVolumeResponse>`,
	}
	for _, m := range models {
		check := func(doc string) []string {
			root, err := parseXML([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			return m.checkAnswer(strings.TrimSuffix(root.name.Local, "Response"), root)
		}
		if probs := check(good); len(probs) > 0 {
			t.Errorf("%s: a good answer: %v", m.path, probs)
		}
		for what, doc := range bad {
			if what == "wrong root" {
				root, _ := parseXML([]byte(doc))
				if len(m.checkAnswer("DescribeVolumes", root)) == 0 {
					t.Errorf("%s: %s: no problem found", m.path, what)
				}
				continue
			}
			if len(check(doc)) == 0 {
				t.Errorf("%s: %s: no problem found", m.path, what)
			}
		}
	}
	errDoc := `<Response><Errors><Error><Code>%s</Code><Message>m</Message></Error></Errors><RequestID>0d3e3c8c-5f7a-4b9e-9c1e-3f7a2b6c8d9e</RequestID></Response>`
	for code, want := range map[string]bool{"AuthFailure": true, "NoSuchThing": false} {
		root, _ := parseXML(fmt.Appendf(nil, errDoc, code))
		if got := len(checkError(root)) == 0; got != want {
			t.Errorf("error document with code %s: passes %v", code, got)
		}
	}
	root, _ := parseXML([]byte(`<Response><Error><Code>AuthFailure</Code><Message>m</Message></Error></Response>`))
	if len(checkError(root)) == 0 {
		t.Errorf("an error document without Errors and RequestID passes")
	}
}
