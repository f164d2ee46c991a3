package ec2

import (
	"net/url"
	"slices"
	"strings"
	"time"

	"kiln/daemon/api"
	"kiln/internal/ids"
)

// timeFormat is how EC2 writes times.
const timeFormat = "2006-01-02T15:04:05.000Z"

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

type tag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

// tagSet is a resource's tags in EC2's form, sorted by key.
func tagSet(tags map[string]string) list[tag] {
	out := make([]tag, 0, len(tags))
	for k, v := range tags {
		out = append(out, tag{k, v})
	}
	slices.SortFunc(out, func(a, b tag) int { return strings.Compare(a.Key, b.Key) })
	return listOf(out)
}

type stateReason struct {
	Code    string `xml:"code"`
	Message string `xml:"message"`
}

type ebsBlockDevice struct {
	SnapshotID          string `xml:"snapshotId,omitempty"`
	VolumeSize          int64  `xml:"volumeSize,omitempty"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
	VolumeType          string `xml:"volumeType"`
	Encrypted           bool   `xml:"encrypted"`
}

type blockDeviceMapping struct {
	DeviceName string          `xml:"deviceName"`
	Ebs        *ebsBlockDevice `xml:"ebs,omitempty"`
}

type image struct {
	Architecture        string                   `xml:"architecture"`
	CreationDate        string                   `xml:"creationDate"`
	ImageID             string                   `xml:"imageId"`
	ImageLocation       string                   `xml:"imageLocation"`
	ImageType           string                   `xml:"imageType"`
	Public              bool                     `xml:"isPublic"`
	OwnerID             string                   `xml:"imageOwnerId"`
	PlatformDetails     string                   `xml:"platformDetails"`
	UsageOperation      string                   `xml:"usageOperation"`
	State               string                   `xml:"imageState"`
	BlockDeviceMappings list[blockDeviceMapping] `xml:"blockDeviceMapping"`
	Description         string                   `xml:"description,omitempty"`
	EnaSupport          bool                     `xml:"enaSupport"`
	Hypervisor          string                   `xml:"hypervisor"`
	Name                string                   `xml:"name"`
	RootDeviceName      string                   `xml:"rootDeviceName"`
	RootDeviceType      string                   `xml:"rootDeviceType"`
	StateReason         *stateReason             `xml:"stateReason,omitempty"`
	Tags                list[tag]                `xml:"tagSet"`
	VirtualizationType  string                   `xml:"virtualizationType"`
	BootMode            string                   `xml:"bootMode,omitempty"`
	TpmSupport          string                   `xml:"tpmSupport,omitempty"`
	DeprecationTime     string                   `xml:"deprecationTime,omitempty"`
	ImdsSupport         string                   `xml:"imdsSupport,omitempty"`
}

// imageOf is EC2's view of one of kiln's images.
func imageOf(im api.Image) image {
	out := image{
		Architecture: im.Architecture, CreationDate: ts(im.CreationDate), ImageID: im.ID,
		ImageLocation: im.OwnerID + "/" + im.Name, ImageType: "machine", Public: im.Public, OwnerID: im.OwnerID,
		PlatformDetails: "Linux/UNIX", UsageOperation: "RunInstances", State: im.State, Description: im.Description,
		Hypervisor: "xen", Name: im.Name, RootDeviceName: im.RootDeviceName, RootDeviceType: im.RootDeviceType,
		Tags: tagSet(im.Tags), VirtualizationType: "hvm", BootMode: im.BootMode, TpmSupport: im.TPMSupport,
	}
	if im.DeprecationTime != nil {
		out.DeprecationTime = ts(*im.DeprecationTime)
	}
	if im.StateReason != "" {
		out.StateReason = &stateReason{Code: "Client.UserInitiated", Message: im.StateReason}
		if im.State == "failed" {
			out.StateReason.Code = "Server.InternalError"
		}
	}
	for _, m := range im.BlockDeviceMappings {
		bdm := blockDeviceMapping{DeviceName: m.DeviceName}
		if m.EBS != nil {
			bdm.Ebs = &ebsBlockDevice{SnapshotID: m.EBS.SnapshotID, VolumeSize: m.EBS.VolumeSize,
				DeleteOnTermination: m.EBS.DeleteOnTermination, VolumeType: volumeType, Encrypted: m.EBS.Encrypted}
		}
		out.BlockDeviceMappings.Items = append(out.BlockDeviceMappings.Items, bdm)
	}
	return out
}

// volumeType is what EC2 calls kiln's volumes (qcow2 files on the host's disk).
const volumeType = "standard"

// checkIDs refuses ids that are not well-formed ids of prefix, with EC2's Malformed code.
func checkIDs(code, prefix string, list []string) *Error {
	for _, id := range list {
		if !validID(prefix, id) {
			return errorf(code, "Invalid id: \"%s\" (expecting \"%s-...\")", clip(id), prefix)
		}
	}
	return nil
}

// validID reports whether id is a well-formed id of prefix (ami, i, vol, ...).
func validID(prefix, id string) bool { return ids.IsID(prefix+"-", id) }

// kilnFilters are EC2 filters in kiln's form (KEY=PATTERN, values of a key ORed): kiln's
// API applies them, with the same names.
func kilnFilters(fs []filter) url.Values {
	q := url.Values{}
	for _, f := range fs {
		for _, v := range f.Values {
			q.Add("filter", f.Name+"="+v)
		}
	}
	return q
}

type describeImagesResponse struct {
	meta
	Images    list[image] `xml:"imagesSet"`
	NextToken string      `xml:"nextToken,omitempty"`
}

func describeImages(c *call) (answer, *Error) {
	want := c.p.values("ImageId")
	if e := checkIDs("InvalidAMIID.Malformed", "ami", want); e != nil {
		return nil, e
	}
	fs, e := c.p.filters()
	if e != nil {
		return nil, e
	}
	if len(want) > 0 && c.p.get("MaxResults") != "" {
		return nil, errorf(codeInvalidParameterCombo, "The parameter ImageIds cannot be used with MaxResults")
	}
	q := kilnFilters(fs)
	deprecated, e := c.p.boolean("IncludeDeprecated")
	if e != nil {
		return nil, e
	}
	if deprecated {
		q.Set("include-deprecated", "true")
	}
	disabled, e := c.p.boolean("IncludeDisabled")
	if e != nil {
		return nil, e
	}
	if disabled {
		q.Set("include-disabled", "true")
	}
	if len(want) > 0 {
		q.Set("include-deprecated", "true") // an image asked for by id is shown, as EC2 does
	}
	var all []api.Image
	if err := c.s.kiln.Call(c.ctx, "GET", "/images", q, nil, &all); err != nil {
		return nil, fromAPI(err, false)
	}
	owners := c.owners()
	users := c.p.values("ExecutableBy")
	var out []api.Image
	for _, im := range all {
		if len(want) > 0 && !slices.Contains(want, im.ID) ||
			len(owners) > 0 && !slices.Contains(owners, im.OwnerID) ||
			len(users) > 0 && !slices.ContainsFunc(users, func(u string) bool { return c.executableBy(im, u) }) {
			continue
		}
		out = append(out, im)
	}
	if missing := missingIDs(want, out, func(im api.Image) string { return im.ID }); len(missing) > 0 {
		return nil, notFound("InvalidAMIID.NotFound", "image id", missing)
	}
	if c.dry {
		return c.dryRun()
	}
	pg, next, e := page(c.p, out, func(im api.Image) string { return im.ID }, 5, 1000)
	if e != nil {
		return nil, e
	}
	resp := &describeImagesResponse{NextToken: next, Images: list[image]{Items: make([]image, 0, len(pg))}}
	for _, im := range pg {
		resp.Images.Items = append(resp.Images.Items, imageOf(im))
	}
	return resp, nil
}

// owners are the request's Owner.N, self as the caller's name.
func (c *call) owners() []string {
	owners := c.p.values("Owner")
	for i, o := range owners {
		if o == "self" {
			owners[i] = c.caller.User
		}
	}
	return owners
}

// executableBy reports whether user (an account: a user name, self or all) may launch
// im as far as the caller can tell: all is public; self is what the caller sees (kiln
// shows each user the images it may launch); another user is one the owner shared it
// with, which only the owner's view says.
func (c *call) executableBy(im api.Image, user string) bool {
	switch {
	case user == "all":
		return im.Public
	case user == "self" || user == c.caller.User:
		return true
	case im.LaunchPermission != nil:
		return slices.Contains(im.LaunchPermission.Users, user)
	}
	return false
}

// missingIDs are the ids of want that found has none of.
func missingIDs[T any](want []string, found []T, id func(T) string) []string {
	var missing []string
	for _, w := range want {
		if !slices.ContainsFunc(found, func(t T) bool { return id(t) == w }) {
			missing = append(missing, w)
		}
	}
	return missing
}

type imageIDResponse struct {
	meta
	ImageID string `xml:"imageId"`
}

type returnResponse struct {
	meta
	Return bool `xml:"return"`
}

func ok() (answer, *Error) { return &returnResponse{Return: true}, nil }

func createImage(c *call) (answer, *Error) {
	inst, e := c.p.required("InstanceId")
	if e != nil {
		return nil, e
	}
	if e := checkIDs("InvalidInstanceID.Malformed", "i", []string{inst}); e != nil {
		return nil, e
	}
	name, e := c.p.required("Name")
	if e != nil {
		return nil, e
	}
	noReboot, e := c.p.boolean("NoReboot")
	if e != nil {
		return nil, e
	}
	if len(c.p.indexed("BlockDeviceMapping")) > 0 {
		return nil, errorf(codeInvalidParameterValue, "BlockDeviceMapping: kiln's create-image captures every volume of the instance as it is and takes no mappings")
	}
	specs, e := c.p.tagSpecs("image", "snapshot")
	if e != nil {
		return nil, e
	}
	if _, err := c.instance(inst); err != nil {
		return nil, err
	}
	if c.dry {
		return c.dryRun()
	}
	made, e := c.s.tokens.once(c, func() ([]string, *Error) {
		var im api.Image
		req := api.CreateImageRequest{Name: name, Description: c.p.get("Description"), NoReboot: noReboot, Tags: specs["image"], SnapshotTags: specs["snapshot"]}
		if err := c.s.kiln.Call(c.ctx, "POST", "/instances/"+inst+"/create-image", nil, req, &im); err != nil {
			return nil, fromAPI(err, true)
		}
		return []string{im.ID}, nil
	})
	if e != nil {
		return nil, e
	}
	return &imageIDResponse{ImageID: made[0]}, nil
}

func copyImage(c *call) (answer, *Error) {
	src, e := c.p.required("SourceImageId")
	if e != nil {
		return nil, e
	}
	if e := checkIDs("InvalidAMIID.Malformed", "ami", []string{src}); e != nil {
		return nil, e
	}
	name, e := c.p.required("Name")
	if e != nil {
		return nil, e
	}
	region, e := c.p.required("SourceRegion")
	if e != nil {
		return nil, e
	}
	if region != c.s.cfg.Region {
		return nil, errorf(codeInvalidParameterValue, "SourceRegion %s: this kiln is the one region %s; images travel between machines through registries (kiln image push/pull)", clip(region), c.s.cfg.Region)
	}
	if enc, e := c.p.boolean("Encrypted"); e != nil || enc || c.p.get("KmsKeyId") != "" || c.p.get("DestinationOutpostArn") != "" {
		if e != nil {
			return nil, e
		}
		return nil, errorf(codeInvalidParameterValue, "kiln does not encrypt images yet, and has no outposts: leave out Encrypted, KmsKeyId and DestinationOutpostArn")
	}
	copyTags, e := c.p.boolean("CopyImageTags")
	if e != nil {
		return nil, e
	}
	if _, err := c.image(src); err != nil {
		return nil, err
	}
	if c.dry {
		return c.dryRun()
	}
	made, e := c.s.tokens.once(c, func() ([]string, *Error) {
		var im api.Image
		req := api.CopyImageRequest{Name: name, Description: c.p.get("Description"), CopyTags: copyTags}
		if err := c.s.kiln.Call(c.ctx, "POST", "/images/"+src+"/copy", nil, req, &im); err != nil {
			return nil, fromAPI(err, false)
		}
		return []string{im.ID}, nil
	})
	if e != nil {
		return nil, e
	}
	return &imageIDResponse{ImageID: made[0]}, nil
}

// image is the image id names, as the caller sees it (ids only: EC2 takes no names).
func (c *call) image(id string) (api.Image, *Error) {
	if e := checkIDs("InvalidAMIID.Malformed", "ami", []string{id}); e != nil {
		return api.Image{}, e
	}
	var im api.Image
	if err := c.s.kiln.Call(c.ctx, "GET", "/images/"+id, nil, nil, &im); err != nil {
		e := fromAPI(err, false)
		if e.Code == api.CodeInvalidAMIIDNotFound {
			e = notFound("InvalidAMIID.NotFound", "image id", []string{id})
		}
		return api.Image{}, e
	}
	return im, nil
}

// ownImage is the image id names when the caller owns it (or administers kiln: its API
// says); another's is UnauthorizedOperation, as EC2's.
func (c *call) ownImage(id string) (api.Image, *Error) {
	im, e := c.image(id)
	if e != nil {
		return im, e
	}
	if im.OwnerID != c.caller.User && im.LaunchPermission == nil {
		return im, errorf(codeUnauthorizedOperation, "You are not authorized to perform this operation: image %s is %s's", id, im.OwnerID)
	}
	return im, nil
}

func deregisterImage(c *call) (answer, *Error) {
	id, e := c.p.required("ImageId")
	if e != nil {
		return nil, e
	}
	if _, e := c.ownImage(id); e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	if err := c.s.kiln.Call(c.ctx, "DELETE", "/images/"+id, nil, nil, nil); err != nil {
		return nil, fromAPI(err, false)
	}
	return ok()
}

type attributeValue struct {
	Value string `xml:"value"`
}

type launchPermission struct {
	UserID string `xml:"userId,omitempty"`
	Group  string `xml:"group,omitempty"`
}

type imageAttributeResponse struct {
	meta
	ImageID             string                    `xml:"imageId"`
	LaunchPermissions   *list[launchPermission]   `xml:"launchPermission,omitempty"`
	Description         *attributeValue           `xml:"description,omitempty"`
	BootMode            *attributeValue           `xml:"bootMode,omitempty"`
	TpmSupport          *attributeValue           `xml:"tpmSupport,omitempty"`
	BlockDeviceMappings *list[blockDeviceMapping] `xml:"blockDeviceMapping,omitempty"`
	LastLaunchedTime    *attributeValue           `xml:"lastLaunchedTime,omitempty"`
	KernelID            *attributeValue           `xml:"kernel,omitempty"`
	RamdiskID           *attributeValue           `xml:"ramdisk,omitempty"`
}

func describeImageAttribute(c *call) (answer, *Error) {
	id, e := c.p.required("ImageId")
	if e != nil {
		return nil, e
	}
	attr, e := c.p.required("Attribute")
	if e != nil {
		return nil, e
	}
	im, e := c.image(id)
	if e != nil {
		return nil, e
	}
	resp := &imageAttributeResponse{ImageID: im.ID}
	switch attr {
	case "launchPermission":
		if im.LaunchPermission == nil {
			return nil, errorf(codeUnauthorizedOperation, "You are not authorized to perform this operation: only the owner of %s sees its launch permissions", id)
		}
		perms := launchPermissions(*im.LaunchPermission)
		resp.LaunchPermissions = &perms
	case "description":
		resp.Description = &attributeValue{im.Description}
	case "bootMode":
		resp.BootMode = &attributeValue{im.BootMode}
	case "tpmSupport":
		resp.TpmSupport = &attributeValue{im.TPMSupport}
	case "lastLaunchedTime":
		if im.LaunchPermission == nil {
			return nil, errorf(codeUnauthorizedOperation, "You are not authorized to perform this operation: only the owner of %s sees when it was last launched", id)
		}
		resp.LastLaunchedTime = &attributeValue{}
		if im.LastLaunchedTime != nil {
			resp.LastLaunchedTime.Value = ts(*im.LastLaunchedTime)
		}
	case "blockDeviceMapping":
		bdm := imageOf(im).BlockDeviceMappings
		resp.BlockDeviceMappings = &bdm
	case "kernel":
		resp.KernelID = &attributeValue{}
	case "ramdisk":
		resp.RamdiskID = &attributeValue{}
	default:
		return nil, errorf(codeInvalidParameterValue, "Value (%s) for parameter attribute is invalid: kiln answers launchPermission, description, bootMode, tpmSupport, lastLaunchedTime, blockDeviceMapping, kernel and ramdisk", clip(attr))
	}
	if c.dry {
		return c.dryRun()
	}
	return resp, nil
}

func launchPermissions(lp api.LaunchPermission) list[launchPermission] {
	out := list[launchPermission]{Items: []launchPermission{}}
	if lp.Public {
		out.Items = append(out.Items, launchPermission{Group: "all"})
	}
	for _, u := range lp.Users {
		out.Items = append(out.Items, launchPermission{UserID: u})
	}
	for _, g := range lp.Groups {
		out.Items = append(out.Items, launchPermission{Group: g})
	}
	return out
}

// shareRequest reads launch permission changes: LaunchPermission.Add.N / .Remove.N
// (UserId, Group), or OperationType with UserId.N and UserGroup.N. Groups other than
// all are Unix groups, as kiln shares with them.
func shareRequest(p params) (add, remove api.ShareRequest, e *Error) {
	fill := func(req *api.ShareRequest, users, groups []string) {
		req.Users = append(req.Users, users...)
		for _, g := range groups {
			if g == "all" {
				req.Public = true
			} else {
				req.Groups = append(req.Groups, g)
			}
		}
	}
	for _, part := range []struct {
		name string
		req  *api.ShareRequest
	}{{"LaunchPermission.Add", &add}, {"LaunchPermission.Remove", &remove}} {
		for _, lp := range p.indexed(part.name) {
			for k := range lp {
				if k != "UserId" && k != "Group" {
					return add, remove, errorf(codeInvalidParameterValue, "%s.N.%s: kiln shares with users (UserId) and groups (Group) only", part.name, clip(k))
				}
			}
			fill(part.req, nonEmpty(lp["UserId"]), nonEmpty(lp["Group"]))
		}
	}
	users, groups := p.values("UserId"), p.values("UserGroup")
	switch op := p.get("OperationType"); {
	case op == "add":
		fill(&add, users, groups)
	case op == "remove":
		fill(&remove, users, groups)
	case op != "":
		return add, remove, errorf(codeInvalidParameterValue, "OperationType %q: want add or remove", clip(op))
	case len(users)+len(groups) > 0:
		return add, remove, errorf(codeMissingParameter, "UserId and UserGroup need OperationType (add or remove)")
	}
	return add, remove, nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func shareEmpty(r api.ShareRequest) bool { return len(r.Users)+len(r.Groups) == 0 && !r.Public }

func modifyImageAttribute(c *call) (answer, *Error) {
	id, e := c.p.required("ImageId")
	if e != nil {
		return nil, e
	}
	add, remove, e := shareRequest(c.p)
	if e != nil {
		return nil, e
	}
	desc, hasDesc := c.p["Description.Value"]
	switch attr := c.p.get("Attribute"); attr {
	case "", "launchPermission":
		if _, ok := c.p["Value"]; ok {
			return nil, errorf(codeInvalidParameterCombo, "Value goes with Attribute description only")
		}
	case "description":
		desc, hasDesc = c.p.get("Value"), true
	default:
		return nil, errorf(codeInvalidParameterValue, "Value (%s) for parameter attribute is invalid: kiln changes launchPermission and description", clip(attr))
	}
	if len(c.p.indexed("ProductCode")) > 0 {
		return nil, errorf(codeInvalidParameterValue, "kiln's images have no product codes")
	}
	if shareEmpty(add) && shareEmpty(remove) && !hasDesc {
		return nil, errorf(codeMissingParameter, "say what to change: LaunchPermission.Add/Remove, or Description")
	}
	if _, e := c.ownImage(id); e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	if !shareEmpty(add) {
		if err := c.s.kiln.Call(c.ctx, "POST", "/images/"+id+"/share", nil, add, nil); err != nil {
			return nil, fromAPI(err, false)
		}
	}
	if !shareEmpty(remove) {
		if err := c.s.kiln.Call(c.ctx, "POST", "/images/"+id+"/unshare", nil, remove, nil); err != nil {
			return nil, fromAPI(err, false)
		}
	}
	if hasDesc {
		if err := c.s.kiln.Call(c.ctx, "POST", "/images/"+id+"/description", nil, api.DescriptionRequest{Description: desc}, nil); err != nil {
			return nil, fromAPI(err, false)
		}
	}
	return ok()
}

func resetImageAttribute(c *call) (answer, *Error) {
	id, e := c.p.required("ImageId")
	if e != nil {
		return nil, e
	}
	if attr := c.p.get("Attribute"); attr != "launchPermission" {
		return nil, errorf(codeInvalidParameterValue, "Value (%s) for parameter attribute is invalid: only launchPermission can be reset", clip(attr))
	}
	im, e := c.ownImage(id)
	if e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	if lp := im.LaunchPermission; lp != nil {
		all := api.ShareRequest{Users: lp.Users, Groups: lp.Groups, Public: lp.Public}
		if !shareEmpty(all) {
			if err := c.s.kiln.Call(c.ctx, "POST", "/images/"+id+"/unshare", nil, all, nil); err != nil {
				return nil, fromAPI(err, false)
			}
		}
	}
	return ok()
}
