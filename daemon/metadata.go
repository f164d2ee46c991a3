package daemon

import (
	"fmt"

	"kiln/daemon/imds"
	"kiln/daemon/machines"
	"kiln/hypervisor"
)

// metadata is what the metadata service answers the guest of the instance whose QEMU
// runs as uid (imds.Lookup): its record and what it was launched with.
func (s *server) metadata(uid uint32) (imds.Instance, bool) {
	rec, launch, ok := s.inst.Metadata(uid)
	if !ok {
		return imds.Instance{}, false
	}
	in := imds.Instance{
		ID: rec.ID, ImageID: rec.ImageID, InstanceType: rec.InstanceType, AccountID: rec.OwnerID,
		LaunchTime: rec.LaunchTime, LocalIPv4: hypervisor.GuestIP, Hostname: rec.Name, MAC: machines.MAC(rec.ID),
		UserData: launch.UserData, TokensRequired: rec.MetadataTokensRequired, Enabled: true,
		BlockDeviceMappings: map[string]string{"ami": rec.RootDeviceName, "root": rec.RootDeviceName},
	}
	if launch.PublicKey != "" {
		in.PublicKeys = map[string]string{rec.KeyName: launch.PublicKey}
	}
	n := 0
	for _, m := range rec.Mappings {
		if m.DeviceName != rec.RootDeviceName {
			n++
			in.BlockDeviceMappings[fmt.Sprintf("ebs%d", n)] = m.DeviceName
		}
	}
	return in, true
}
