package ec2

import (
	"bytes"
	"encoding/xml"
	"testing"
	"time"

	"kiln/daemon/api"
)

// TestEncodeAnswer: the door's encoder writes what encoding/xml writes for the same
// answers (escaping, empty lists, omitted fields, embedded structs).
func TestEncodeAnswer(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	im := imageOf(api.Image{ID: "ami-0123456789abcdef0", Name: `a<b>&"c"` + "\n\t", OwnerID: "alice", State: "available",
		Tags: map[string]string{"k": "v & w"}, CreationDate: now, DeprecationTime: &now,
		BlockDeviceMappings: []api.BlockDeviceMapping{{DeviceName: "/dev/vda", EBS: &api.EBS{SnapshotID: "snap-1", VolumeSize: 2}}, {DeviceName: "/dev/vdb"}}})
	s := &Server{cfg: Config{Region: api.DefaultRegion}}
	for _, resp := range []answer{
		&describeImagesResponse{Images: listOf([]image{im, imageOf(api.Image{})}), NextToken: "x"},
		&describeImagesResponse{Images: list[image]{}},
		&runInstancesResponse{reservation: reservation{ReservationID: "r-1", Groups: list[struct{}]{Items: []struct{}{{}}},
			Instances: listOf([]instance{s.instanceOf(api.Instance{ID: "i-1", State: "running", CPUs: 2, StateReason: "x<y"}, 0)})}},
		&imageAttributeResponse{ImageID: "ami-1", Description: &attributeValue{"d"}, LaunchPermissions: &list[launchPermission]{Items: []launchPermission{{UserID: "bob"}, {Group: "all"}}}},
		&createVolumeResponse{volume: s.volumeOf(api.Volume{ID: "vol-1", SizeGiB: 3})},
		&returnResponse{Return: true},
	} {
		resp.setRequestID("req-1")
		var got, want bytes.Buffer
		if err := encodeAnswer(&got, "XResponse", resp); err != nil {
			t.Fatal(err)
		}
		want.WriteString(xml.Header)
		start := xml.StartElement{Name: xml.Name{Local: "XResponse"}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: Namespace}}}
		if err := xml.NewEncoder(&want).EncodeElement(resp, start); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%T:\n got %s\nwant %s", resp, got.String(), want.String())
		}
	}
}
