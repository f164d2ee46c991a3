package ec2

import (
	"slices"
	"strconv"

	"kiln/daemon/api"
)

type region struct {
	Endpoint   string `xml:"regionEndpoint"`
	RegionName string `xml:"regionName"`
	OptIn      string `xml:"optInStatus"`
}

type describeRegionsResponse struct {
	meta
	Regions list[region] `xml:"regionInfo"`
}

// describeRegions answers kiln's one region (its endpoint is the one asked).
func describeRegions(c *call) (answer, *Error) {
	names := c.p.values("RegionName")
	if i := slices.IndexFunc(names, func(n string) bool { return n != c.s.cfg.Region }); i >= 0 {
		return nil, errorf(codeInvalidParameterValue, "Invalid region: %s: this kiln is the one region %s", clip(names[i]), c.s.cfg.Region)
	}
	if len(c.p.indexed("Filter")) > 0 {
		return nil, errorf(codeInvalidParameterValue, "DescribeRegions takes no filters in kiln: it has one region, %s", c.s.cfg.Region)
	}
	if _, e := c.p.boolean("AllRegions"); e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	return &describeRegionsResponse{Regions: listOf([]region{{Endpoint: c.endpoint, RegionName: c.s.cfg.Region, OptIn: "opt-in-not-required"}})}, nil
}

type zone struct {
	State      string         `xml:"zoneState"`
	RegionName string         `xml:"regionName"`
	ZoneName   string         `xml:"zoneName"`
	ZoneID     string         `xml:"zoneId"`
	ZoneType   string         `xml:"zoneType"`
	Messages   list[struct{}] `xml:"messageSet"`
}

type describeZonesResponse struct {
	meta
	Zones list[zone] `xml:"availabilityZoneInfo"`
}

func describeAvailabilityZones(c *call) (answer, *Error) {
	for _, n := range append(c.p.values("ZoneName"), c.p.values("ZoneId")...) {
		if n != c.s.Zone() {
			return nil, errorf(codeInvalidParameterValue, "The zone '%s' does not exist in this region: this kiln's one zone is %s", clip(n), c.s.Zone())
		}
	}
	if len(c.p.indexed("Filter")) > 0 {
		return nil, errorf(codeInvalidParameterValue, "DescribeAvailabilityZones takes no filters in kiln: it has one zone, %s", c.s.Zone())
	}
	if _, e := c.p.boolean("AllAvailabilityZones"); e != nil {
		return nil, e
	}
	if c.dry {
		return c.dryRun()
	}
	return &describeZonesResponse{Zones: listOf([]zone{{State: "available", RegionName: c.s.cfg.Region, ZoneName: c.s.Zone(), ZoneID: c.s.Zone(),
		ZoneType: "availability-zone", Messages: list[struct{}]{Items: []struct{}{}}}})}, nil
}

type vcpuInfo struct {
	DefaultVCpus          int `xml:"defaultVCpus"`
	DefaultCores          int `xml:"defaultCores"`
	DefaultThreadsPerCore int `xml:"defaultThreadsPerCore"`
}

type memoryInfo struct {
	SizeInMiB int `xml:"sizeInMiB"`
}

type processorInfo struct {
	SupportedArchitectures list[string] `xml:"supportedArchitectures"`
}

type instanceTypeInfo struct {
	InstanceType                 string        `xml:"instanceType"`
	CurrentGeneration            bool          `xml:"currentGeneration"`
	SupportedUsageClasses        list[string]  `xml:"supportedUsageClasses"`
	SupportedRootDeviceTypes     list[string]  `xml:"supportedRootDeviceTypes"`
	SupportedVirtualizationTypes list[string]  `xml:"supportedVirtualizationTypes"`
	BareMetal                    bool          `xml:"bareMetal"`
	Hypervisor                   string        `xml:"hypervisor"`
	ProcessorInfo                processorInfo `xml:"processorInfo"`
	VCPUInfo                     vcpuInfo      `xml:"vCpuInfo"`
	MemoryInfo                   memoryInfo    `xml:"memoryInfo"`
	SupportedBootModes           list[string]  `xml:"supportedBootModes"`
}

type describeInstanceTypesResponse struct {
	meta
	InstanceTypes list[instanceTypeInfo] `xml:"instanceTypeSet"`
	NextToken     string                 `xml:"nextToken,omitempty"`
}

// describeInstanceTypes answers kiln's instance types (kiln run --type).
func describeInstanceTypes(c *call) (answer, *Error) {
	want := c.p.values("InstanceType")
	if len(c.p.indexed("Filter")) > 0 {
		return nil, errorf(codeInvalidParameterValue, "DescribeInstanceTypes takes no filters in kiln: name the types (InstanceType) or list them all")
	}
	info, err := c.s.kiln.Info(c.ctx)
	if err != nil {
		return nil, fromAPI(err, false)
	}
	types := slices.DeleteFunc(slices.Clone(info.InstanceTypes), func(t api.InstanceType) bool { return len(want) > 0 && !slices.Contains(want, t.Name) })
	if missing := missingIDs(want, types, func(t api.InstanceType) string { return t.Name }); len(missing) > 0 {
		return nil, errorf(codeInvalidParameterValue, "The following supplied instance types do not exist: [%s]", clip(missing[0]))
	}
	if c.dry {
		return c.dryRun()
	}
	pg, next, e := page(c.p, types, func(t api.InstanceType) string { return t.Name }, 5, 100)
	if e != nil {
		return nil, e
	}
	resp := &describeInstanceTypesResponse{NextToken: next, InstanceTypes: list[instanceTypeInfo]{Items: []instanceTypeInfo{}}}
	for _, t := range pg {
		resp.InstanceTypes.Items = append(resp.InstanceTypes.Items, instanceTypeInfo{
			InstanceType: t.Name, CurrentGeneration: true, SupportedUsageClasses: listOf([]string{"on-demand"}),
			SupportedRootDeviceTypes: listOf([]string{"ebs"}), SupportedVirtualizationTypes: listOf([]string{"hvm"}),
			Hypervisor: "xen", ProcessorInfo: processorInfo{listOf([]string{"x86_64"})},
			VCPUInfo: vcpuInfo{t.CPUs, t.CPUs, 1}, MemoryInfo: memoryInfo{t.MemoryMiB},
			SupportedBootModes: listOf([]string{"legacy-bios", "uefi"}),
		})
	}
	return resp, nil
}

type accountAttributeValue struct {
	AttributeValue string `xml:"attributeValue"`
}

type accountAttribute struct {
	AttributeName   string                      `xml:"attributeName"`
	AttributeValues list[accountAttributeValue] `xml:"attributeValueSet"`
}

type describeAccountAttributesResponse struct {
	meta
	Attributes list[accountAttribute] `xml:"accountAttributeSet"`
}

// describeAccountAttributes answers what EC2 says of an account, as kiln has it: no
// VPCs or security groups, and the most instances the caller's quota lets it run.
func describeAccountAttributes(c *call) (answer, *Error) {
	attrs := map[string]string{
		"supported-platforms":                   "VPC",
		"default-vpc":                           "none",
		"max-instances":                         "",
		"vpc-max-security-groups-per-interface": "0",
		"max-elastic-ips":                       "0",
		"vpc-max-elastic-ips":                   "0",
	}
	names := c.p.values("AttributeName")
	for _, n := range names {
		if _, ok := attrs[n]; !ok {
			return nil, errorf(codeInvalidParameterValue, "Value (%s) for parameter attributeName is invalid", clip(n))
		}
	}
	if c.dry {
		return c.dryRun()
	}
	attrs["max-instances"] = "20"
	if c.s.cfg.MaxInstances != nil {
		attrs["max-instances"] = strconv.Itoa(c.s.cfg.MaxInstances(c.caller.User))
	}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		if len(names) == 0 || slices.Contains(names, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	resp := &describeAccountAttributesResponse{Attributes: list[accountAttribute]{Items: []accountAttribute{}}}
	for _, k := range keys {
		resp.Attributes.Items = append(resp.Attributes.Items, accountAttribute{k, listOf([]accountAttributeValue{{attrs[k]}})})
	}
	return resp, nil
}
