package ec2

// actions are the actions the door implements, with the parameters each takes (EC2's
// query names, before any ".N"); any other action is InvalidAction, any other
// parameter UnknownParameter.
var actions = map[string]action{
	"DescribeImages":         {[]string{"ImageId", "Owner", "ExecutableBy", "Filter", "IncludeDeprecated", "IncludeDisabled", "MaxResults", "NextToken"}, describeImages},
	"CreateImage":            {[]string{"InstanceId", "Name", "Description", "NoReboot", "TagSpecification", "BlockDeviceMapping", "ClientToken"}, createImage},
	"CopyImage":              {[]string{"SourceImageId", "SourceRegion", "Name", "Description", "ClientToken", "Encrypted", "KmsKeyId", "DestinationOutpostArn", "CopyImageTags"}, copyImage},
	"DeregisterImage":        {[]string{"ImageId"}, deregisterImage},
	"DescribeImageAttribute": {[]string{"ImageId", "Attribute"}, describeImageAttribute},
	"ModifyImageAttribute": {[]string{"ImageId", "Attribute", "Description", "LaunchPermission", "OperationType", "UserId", "UserGroup",
		"Value", "ProductCode"}, modifyImageAttribute},
	"ResetImageAttribute": {[]string{"ImageId", "Attribute"}, resetImageAttribute},

	"RunInstances": {[]string{"ImageId", "InstanceType", "MinCount", "MaxCount", "UserData", "KeyName", "BlockDeviceMapping",
		"TagSpecification", "ClientToken", "Placement", "MetadataOptions"}, runInstances},
	"DescribeInstances":      {[]string{"InstanceId", "Filter", "MaxResults", "NextToken"}, describeInstances},
	"DescribeInstanceStatus": {[]string{"InstanceId", "Filter", "IncludeAllInstances", "MaxResults", "NextToken"}, describeInstanceStatus},
	"StartInstances":         {[]string{"InstanceId"}, instanceAction("start")},
	"StopInstances":          {[]string{"InstanceId", "Force", "Hibernate"}, instanceAction("stop")},
	"RebootInstances":        {[]string{"InstanceId"}, instanceAction("reboot")},
	"TerminateInstances":     {[]string{"InstanceId"}, instanceAction("terminate")},
	"GetConsoleOutput":       {[]string{"InstanceId", "Latest"}, getConsoleOutput},

	"DescribeSnapshots": {[]string{"SnapshotId", "Owner", "RestorableBy", "Filter", "MaxResults", "NextToken"}, describeSnapshots},
	"DescribeVolumes":   {[]string{"VolumeId", "Filter", "MaxResults", "NextToken"}, describeVolumes},
	"CreateVolume": {[]string{"AvailabilityZone", "Size", "SnapshotId", "VolumeType", "Encrypted", "Iops", "Throughput", "KmsKeyId",
		"OutpostArn", "MultiAttachEnabled", "TagSpecification", "ClientToken"}, createVolume},
	"AttachVolume": {[]string{"VolumeId", "InstanceId", "Device"}, attachVolume},
	"DetachVolume": {[]string{"VolumeId", "InstanceId", "Device", "Force"}, detachVolume},
	"DeleteVolume": {[]string{"VolumeId"}, deleteVolume},

	"CreateTags":   {[]string{"ResourceId", "Tag"}, createTags},
	"DeleteTags":   {[]string{"ResourceId", "Tag"}, deleteTags},
	"DescribeTags": {[]string{"Filter", "MaxResults", "NextToken"}, describeTags},

	"CreateKeyPair":    {[]string{"KeyName", "KeyType", "KeyFormat", "TagSpecification"}, createKeyPair},
	"ImportKeyPair":    {[]string{"KeyName", "PublicKeyMaterial", "TagSpecification"}, importKeyPair},
	"DescribeKeyPairs": {[]string{"KeyName", "KeyPairId", "Filter", "IncludePublicKey"}, describeKeyPairs},
	"DeleteKeyPair":    {[]string{"KeyName", "KeyPairId"}, deleteKeyPair},

	"DescribeRegions":           {[]string{"RegionName", "Filter", "AllRegions"}, describeRegions},
	"DescribeAvailabilityZones": {[]string{"ZoneName", "ZoneId", "Filter", "AllAvailabilityZones"}, describeAvailabilityZones},
	"DescribeInstanceTypes":     {[]string{"InstanceType", "Filter", "MaxResults", "NextToken"}, describeInstanceTypes},
	"DescribeAccountAttributes": {[]string{"AttributeName"}, describeAccountAttributes},
}
