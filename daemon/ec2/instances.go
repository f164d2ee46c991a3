package ec2

import (
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"time"

	"kiln/daemon/api"
)

// stateCodes are EC2's codes of the instance states.
var stateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

type instanceState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

func stateOf(name string) instanceState { return instanceState{stateCodes[name], name} }

type placement struct {
	AvailabilityZone string `xml:"availabilityZone"`
	Tenancy          string `xml:"tenancy"`
}

type monitoring struct {
	State string `xml:"state"`
}

type ebsInstanceBlockDevice struct {
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
	Status              string `xml:"status"`
	VolumeID            string `xml:"volumeId"`
}

type instanceBlockDeviceMapping struct {
	DeviceName string                 `xml:"deviceName"`
	Ebs        ebsInstanceBlockDevice `xml:"ebs"`
}

type cpuOptions struct {
	CoreCount      int `xml:"coreCount"`
	ThreadsPerCore int `xml:"threadsPerCore"`
}

type metadataOptions struct {
	State        string `xml:"state"`
	HTTPTokens   string `xml:"httpTokens"`
	HTTPEndpoint string `xml:"httpEndpoint"`
}

type instance struct {
	AmiLaunchIndex        int                              `xml:"amiLaunchIndex"`
	ImageID               string                           `xml:"imageId"`
	InstanceID            string                           `xml:"instanceId"`
	InstanceType          string                           `xml:"instanceType"`
	KeyName               string                           `xml:"keyName,omitempty"`
	LaunchTime            string                           `xml:"launchTime"`
	Monitoring            monitoring                       `xml:"monitoring"`
	Placement             placement                        `xml:"placement"`
	PrivateDNSName        string                           `xml:"privateDnsName"`
	PublicDNSName         string                           `xml:"dnsName"`
	State                 instanceState                    `xml:"instanceState"`
	StateTransitionReason string                           `xml:"reason"`
	Architecture          string                           `xml:"architecture"`
	BlockDeviceMappings   list[instanceBlockDeviceMapping] `xml:"blockDeviceMapping"`
	EbsOptimized          bool                             `xml:"ebsOptimized"`
	EnaSupport            bool                             `xml:"enaSupport"`
	Hypervisor            string                           `xml:"hypervisor"`
	RootDeviceName        string                           `xml:"rootDeviceName"`
	RootDeviceType        string                           `xml:"rootDeviceType"`
	StateReason           *stateReason                     `xml:"stateReason,omitempty"`
	Tags                  list[tag]                        `xml:"tagSet"`
	VirtualizationType    string                           `xml:"virtualizationType"`
	CPUOptions            cpuOptions                       `xml:"cpuOptions"`
	MetadataOptions       metadataOptions                  `xml:"metadataOptions"`
	BootMode              string                           `xml:"bootMode,omitempty"`
	PlatformDetails       string                           `xml:"platformDetails"`
	TpmSupport            string                           `xml:"tpmSupport,omitempty"`
}

// instanceOf is EC2's view of one of kiln's instances.
func (s *Server) instanceOf(in api.Instance, index int) instance {
	out := instance{
		AmiLaunchIndex: index, ImageID: in.ImageID, InstanceID: in.ID, InstanceType: in.InstanceType, KeyName: in.KeyName,
		LaunchTime: ts(in.LaunchTime), Monitoring: monitoring{"disabled"}, Placement: placement{s.Zone(), "default"},
		State: stateOf(in.State), Architecture: "x86_64", Hypervisor: "xen", RootDeviceName: in.RootDeviceName,
		RootDeviceType: in.RootDeviceType, Tags: tagSet(in.Tags), VirtualizationType: "hvm",
		CPUOptions:      cpuOptions{CoreCount: in.CPUs, ThreadsPerCore: 1},
		MetadataOptions: metadataOptions{State: "applied", HTTPTokens: in.MetadataTokens, HTTPEndpoint: "enabled"},
		PlatformDetails: "Linux/UNIX", BootMode: in.BootMode,
	}
	if out.InstanceType == "" {
		out.InstanceType = "custom"
	}
	if in.TPM {
		out.TpmSupport = "v2.0"
	}
	if in.SSHPort != 0 {
		out.PublicDNSName = "localhost"
	}
	if in.StateReason != "" {
		out.StateTransitionReason = in.StateReason
		out.StateReason = &stateReason{Code: "Client.UserInitiatedShutdown", Message: in.StateReason}
	}
	out.BlockDeviceMappings.Items = []instanceBlockDeviceMapping{}
	for _, m := range in.BlockDeviceMappings {
		out.BlockDeviceMappings.Items = append(out.BlockDeviceMappings.Items, instanceBlockDeviceMapping{DeviceName: m.DeviceName,
			Ebs: ebsInstanceBlockDevice{AttachTime: ts(in.LaunchTime), DeleteOnTermination: m.DeleteOnTermination, Status: "attached", VolumeID: m.VolumeID}})
	}
	return out
}

// reservationID is the reservation an instance is shown in: kiln keeps none, so each
// instance is its own (docs/ec2.md).
func reservationID(instanceID string) string { return "r-" + strings.TrimPrefix(instanceID, "i-") }

type reservation struct {
	ReservationID string         `xml:"reservationId"`
	OwnerID       string         `xml:"ownerId"`
	Groups        list[struct{}] `xml:"groupSet"`
	Instances     list[instance] `xml:"instancesSet"`
}

type runInstancesResponse struct {
	meta
	reservation
}

func runInstances(c *call) (answer, *Error) {
	image, e := c.p.required("ImageId")
	if e != nil {
		return nil, e
	}
	minCount, e := c.p.integer("MinCount", -1, 1, 64)
	if e != nil {
		return nil, e
	}
	maxCount, e := c.p.integer("MaxCount", -1, 1, 64)
	if e != nil {
		return nil, e
	}
	if minCount < 0 || maxCount < 0 {
		return nil, errorf(codeMissingParameter, "The request must contain the parameters MinCount and MaxCount")
	}
	if minCount > maxCount {
		return nil, errorf(codeInvalidParameterValue, "MinCount (%d) is more than MaxCount (%d)", minCount, maxCount)
	}
	req := api.RunInstancesRequest{Image: image, InstanceType: c.p.get("InstanceType"), Count: maxCount, KeyName: c.p.get("KeyName")}
	if ud := c.p.get("UserData"); ud != "" {
		b, err := base64.StdEncoding.DecodeString(ud)
		if err != nil {
			return nil, errorf(codeInvalidParameterValue, "Invalid BASE64 encoding of user data")
		}
		req.UserData = b
	}
	if z := c.p.get("Placement.AvailabilityZone"); z != "" && z != c.s.Zone() {
		return nil, errorf(codeInvalidParameterValue, "Invalid availability zone: [%s]: this kiln's one zone is %s", clip(z), c.s.Zone())
	}
	for k := range c.p {
		if strings.HasPrefix(k, "Placement.") && k != "Placement.AvailabilityZone" {
			return nil, errorf(codeUnknownParameter, "The parameter %s is not recognized (kiln takes Placement.AvailabilityZone only)", clip(k))
		}
	}
	switch t := c.p.get("MetadataOptions.HttpTokens"); t {
	case "", api.MetadataTokensOptional, api.MetadataTokensRequired:
		req.MetadataTokens = t
	default:
		return nil, errorf(codeInvalidParameterValue, "MetadataOptions.HttpTokens %q: want optional or required", clip(t))
	}
	for k := range c.p {
		if strings.HasPrefix(k, "MetadataOptions.") && k != "MetadataOptions.HttpTokens" {
			return nil, errorf(codeUnknownParameter, "The parameter %s is not recognized (kiln takes MetadataOptions.HttpTokens only)", clip(k))
		}
	}
	var specs []api.VolumeSpec
	for _, m := range c.p.indexed("BlockDeviceMapping") {
		spec, e := volumeSpec(m)
		if e != nil {
			return nil, e
		}
		specs = append(specs, spec)
	}
	tagSpecs, e := c.p.tagSpecs("instance", "volume")
	if e != nil {
		return nil, e
	}
	req.Tags = tagSpecs["instance"]
	im, e := c.image(image)
	if e != nil {
		return nil, e
	}
	// A mapping of one of the image's devices changes that volume; any other is a blank one.
	for _, spec := range specs {
		if slices.ContainsFunc(im.BlockDeviceMappings, func(m api.BlockDeviceMapping) bool { return m.DeviceName == spec.DeviceName }) {
			req.Mappings = append(req.Mappings, spec)
		} else {
			req.Volumes = append(req.Volumes, spec)
		}
	}
	if c.dry {
		return c.dryRun()
	}
	made, e := c.s.tokens.once(c, func() ([]string, *Error) {
		// As EC2: as many as the caller's quota allows, from MaxCount down to MinCount
		// (kiln checks a launch's quota for all its instances before it starts any).
		var insts []api.Instance
		for req.Count = maxCount; ; req.Count-- {
			err := c.s.kiln.Call(c.ctx, "POST", "/instances", nil, req, &insts)
			if err == nil {
				break
			}
			if e := fromAPI(err, true); req.Count == minCount || e.Code != "InstanceLimitExceeded" {
				return nil, e
			}
		}
		made := make([]string, len(insts))
		for i, in := range insts {
			made[i] = in.ID
			if len(tagSpecs["volume"]) == 0 {
				continue
			}
			for _, m := range in.BlockDeviceMappings {
				if err := c.s.kiln.Call(c.ctx, "POST", "/volumes/"+m.VolumeID+"/tags", nil, api.TagRequest{Tags: tagSpecs["volume"]}, nil); err != nil {
					return made, fromAPI(err, false)
				}
			}
		}
		return made, nil
	})
	if e != nil {
		return nil, e
	}
	insts, e := c.instances(made)
	if e != nil {
		return nil, e
	}
	resp := &runInstancesResponse{reservation: c.reservation(insts)}
	return resp, nil
}

// volumeSpec reads one BlockDeviceMapping.N of a launch.
func volumeSpec(m params) (api.VolumeSpec, *Error) {
	for k := range m {
		switch k {
		case "DeviceName", "Ebs.VolumeSize", "Ebs.DeleteOnTermination", "Ebs.VolumeType":
		default:
			return api.VolumeSpec{}, errorf(codeInvalidParameterValue, "BlockDeviceMapping: %s is not something kiln does (it takes DeviceName, Ebs.VolumeSize and Ebs.DeleteOnTermination)", clip(k))
		}
	}
	if e := checkVolumeType(m["Ebs.VolumeType"]); e != nil {
		return api.VolumeSpec{}, e
	}
	spec := api.VolumeSpec{DeviceName: m["DeviceName"]}
	if spec.DeviceName == "" {
		return spec, errorf(codeMissingParameter, "BlockDeviceMapping needs a DeviceName")
	}
	if v := m["Ebs.VolumeSize"]; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return spec, errorf(codeInvalidParameterValue, "BlockDeviceMapping %s: Ebs.VolumeSize %q: want GiB, 1 or more", clip(spec.DeviceName), clip(v))
		}
		spec.SizeGiB = n
	}
	switch d := m["Ebs.DeleteOnTermination"]; d {
	case "true", "false":
		b := d == "true"
		spec.DeleteOnTermination = &b
	case "":
	default:
		return spec, errorf(codeInvalidParameterValue, "Ebs.DeleteOnTermination %q: want true or false", clip(d))
	}
	return spec, nil
}

// reservation shows instances launched together in one reservation.
func (c *call) reservation(insts []api.Instance) reservation {
	r := reservation{OwnerID: c.caller.User, Groups: list[struct{}]{Items: []struct{}{}}}
	if len(insts) > 0 {
		r.ReservationID, r.OwnerID = reservationID(insts[0].ID), insts[0].OwnerID
	}
	for i, in := range insts {
		r.Instances.Items = append(r.Instances.Items, c.s.instanceOf(in, i))
	}
	return r
}

// instances are the instances ids names (all of them, or InvalidInstanceID.NotFound
// naming those the caller cannot see), terminated ones too, in the order asked.
func (c *call) instances(want []string) ([]api.Instance, *Error) {
	if e := checkIDs("InvalidInstanceID.Malformed", "i", want); e != nil {
		return nil, e
	}
	all, e := c.listInstances(nil)
	if e != nil {
		return nil, e
	}
	out := make([]api.Instance, 0, len(want))
	var missing []string
	for _, id := range want {
		i := slices.IndexFunc(all, func(in api.Instance) bool { return in.ID == id })
		if i < 0 {
			missing = append(missing, id)
			continue
		}
		out = append(out, all[i])
	}
	if len(missing) > 0 {
		return nil, notFound("InvalidInstanceID.NotFound", "instance ID", missing)
	}
	return out, nil
}

// instance is one instance the caller may see.
func (c *call) instance(id string) (api.Instance, *Error) {
	insts, e := c.instances([]string{id})
	if e != nil {
		return api.Instance{}, e
	}
	return insts[0], nil
}

// listInstances lists the instances the caller sees, terminated ones too (as EC2 shows
// them for a while), that pass the filters.
func (c *call) listInstances(fs []filter) ([]api.Instance, *Error) {
	q := kilnFilters(fs)
	q.Set("all", "true")
	var all []api.Instance
	if err := c.s.kiln.Call(c.ctx, "GET", "/instances", q, nil, &all); err != nil {
		return nil, fromAPI(err, true)
	}
	return all, nil
}

type describeInstancesResponse struct {
	meta
	Reservations list[reservation] `xml:"reservationSet"`
	NextToken    string            `xml:"nextToken,omitempty"`
}

func describeInstances(c *call) (answer, *Error) {
	want := c.p.values("InstanceId")
	if e := checkIDs("InvalidInstanceID.Malformed", "i", want); e != nil {
		return nil, e
	}
	if len(want) > 0 && c.p.get("MaxResults") != "" {
		return nil, errorf(codeInvalidParameterCombo, "The parameter instancesSet cannot be used with the parameter maxResults")
	}
	fs, e := c.p.filters()
	if e != nil {
		return nil, e
	}
	all, e := c.listInstances(fs)
	if e != nil {
		return nil, e
	}
	if len(want) > 0 {
		// Ids that do not exist are an error; those the filters leave out are not.
		if _, e := c.instances(want); e != nil {
			return nil, e
		}
		all = slices.DeleteFunc(all, func(in api.Instance) bool { return !slices.Contains(want, in.ID) })
	}
	if c.dry {
		return c.dryRun()
	}
	pg, next, e := page(c.p, all, func(in api.Instance) string { return in.ID }, 5, 1000)
	if e != nil {
		return nil, e
	}
	resp := &describeInstancesResponse{NextToken: next, Reservations: list[reservation]{Items: []reservation{}}}
	for _, in := range pg {
		resp.Reservations.Items = append(resp.Reservations.Items, c.reservation([]api.Instance{in}))
	}
	return resp, nil
}

type statusDetail struct {
	Name   string `xml:"name"`
	Status string `xml:"status"`
}

type status struct {
	Status  string             `xml:"status"`
	Details list[statusDetail] `xml:"details"`
}

type instanceStatus struct {
	AvailabilityZone string         `xml:"availabilityZone"`
	InstanceID       string         `xml:"instanceId"`
	InstanceState    instanceState  `xml:"instanceState"`
	InstanceStatus   status         `xml:"instanceStatus"`
	SystemStatus     status         `xml:"systemStatus"`
	Events           list[struct{}] `xml:"eventsSet"`
}

type describeInstanceStatusResponse struct {
	meta
	Statuses  list[instanceStatus] `xml:"instanceStatusSet"`
	NextToken string               `xml:"nextToken,omitempty"`
}

// statusOf is an instance's status checks: the system's passes while QEMU runs; the
// instance's when its guest said it is ready (api.Instance.Ready).
func statusOf(in api.Instance) (system, inst status) {
	check := func(st string) status {
		detail := map[string]string{"ok": "passed", "initializing": "initializing"}[st]
		s := status{Status: st, Details: list[statusDetail]{Items: []statusDetail{}}}
		if detail != "" {
			s.Details.Items = append(s.Details.Items, statusDetail{"reachability", detail})
		}
		return s
	}
	switch {
	case in.State != "running":
		return check("not-applicable"), check("not-applicable")
	case in.Ready:
		return check("ok"), check("ok")
	}
	return check("ok"), check("initializing")
}

func describeInstanceStatus(c *call) (answer, *Error) {
	want := c.p.values("InstanceId")
	if len(want) > 0 && c.p.get("MaxResults") != "" {
		return nil, errorf(codeInvalidParameterCombo, "The parameter instancesSet cannot be used with the parameter maxResults")
	}
	everyState, e := c.p.boolean("IncludeAllInstances")
	if e != nil {
		return nil, e
	}
	if len(c.p.indexed("Filter")) > 0 {
		return nil, errorf(codeInvalidParameterValue, "DescribeInstanceStatus takes no filters in kiln: use InstanceId, or DescribeInstances' filters")
	}
	var insts []api.Instance
	if len(want) > 0 {
		insts, e = c.instances(want)
	} else {
		insts, e = c.listInstances(nil)
	}
	if e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	insts = slices.DeleteFunc(insts, func(in api.Instance) bool {
		return in.State == "terminated" && len(want) == 0 || !everyState && in.State != "running"
	})
	pg, next, e := page(c.p, insts, func(in api.Instance) string { return in.ID }, 5, 1000)
	if e != nil {
		return nil, e
	}
	// Ready is known only to an instance's own inspection: of those on this page.
	for i, in := range pg {
		if in.State == "running" {
			if err := c.s.kiln.Call(c.ctx, "GET", "/instances/"+in.ID, nil, nil, &pg[i]); err != nil {
				return nil, fromAPI(err, true)
			}
		}
	}
	resp := &describeInstanceStatusResponse{NextToken: next, Statuses: list[instanceStatus]{Items: []instanceStatus{}}}
	for _, in := range pg {
		sys, st := statusOf(in)
		resp.Statuses.Items = append(resp.Statuses.Items, instanceStatus{AvailabilityZone: c.s.Zone(), InstanceID: in.ID,
			InstanceState: stateOf(in.State), InstanceStatus: st, SystemStatus: sys, Events: list[struct{}]{Items: []struct{}{}}})
	}
	return resp, nil
}

type stateChange struct {
	InstanceID    string        `xml:"instanceId"`
	CurrentState  instanceState `xml:"currentState"`
	PreviousState instanceState `xml:"previousState"`
}

type stateChangeResponse struct {
	meta
	Instances list[stateChange] `xml:"instancesSet"`
}

// instanceAction runs kiln's action (start, stop, terminate, reboot) on each instance
// the request names, all of which must exist first; the answer says each one's state
// before and after.
func instanceAction(act string) func(*call) (answer, *Error) {
	return func(c *call) (answer, *Error) {
		want := slices.Compact(slices.Sorted(slices.Values(c.p.values("InstanceId")))) // each once, as EC2
		if len(want) == 0 {
			return nil, errorf(codeMissingParameter, "The request must contain the parameter InstanceId")
		}
		force, e := c.p.boolean("Force")
		if e != nil {
			return nil, e
		}
		if hib, e := c.p.boolean("Hibernate"); e != nil || hib {
			if e != nil {
				return nil, e
			}
			return nil, errorf(codeUnsupportedOperation, "kiln's instances do not hibernate")
		}
		insts, e := c.instances(want)
		if e != nil {
			return nil, e
		}
		if c.dry {
			return c.dryRun()
		}
		resp := &stateChangeResponse{Instances: list[stateChange]{Items: []stateChange{}}}
		for _, in := range insts {
			var after api.Instance
			if err := c.s.kiln.Call(c.ctx, "POST", "/instances/"+in.ID+"/"+act, nil, api.StopRequest{Force: force}, &after); err != nil {
				return nil, fromAPI(err, true)
			}
			resp.Instances.Items = append(resp.Instances.Items, stateChange{InstanceID: in.ID, CurrentState: stateOf(after.State), PreviousState: stateOf(in.State)})
		}
		if act == "reboot" {
			return ok()
		}
		return resp, nil
	}
}

// consoleLimit is how much of a console EC2 gives: its last 64 KiB.
const consoleLimit = 64 << 10

type consoleOutputResponse struct {
	meta
	InstanceID string `xml:"instanceId"`
	Timestamp  string `xml:"timestamp"`
	Output     string `xml:"output"`
}

func getConsoleOutput(c *call) (answer, *Error) {
	id, e := c.p.required("InstanceId")
	if e != nil {
		return nil, e
	}
	if _, e := c.p.boolean("Latest"); e != nil {
		return nil, e
	}
	if _, e := c.instance(id); e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	text, err := c.s.kiln.ConsoleText(c.ctx, id)
	if err != nil {
		return nil, fromAPI(err, true)
	}
	if len(text) > consoleLimit {
		text = text[len(text)-consoleLimit:]
	}
	return &consoleOutputResponse{InstanceID: id, Timestamp: ts(time.Now()), Output: base64.StdEncoding.EncodeToString([]byte(text))}, nil
}
