package daemon_test

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/client"
)

// newEC2KilndB starts kilnd for a benchmark with its EC2 endpoint on a free loopback
// port, its store under rootDir and the settings given (JSON, "" for none), and gives a
// client of the endpoint.
func newEC2KilndB(b *testing.B, rootDir, settings string) (*kilnd, *signedDoor) {
	k := kilndAt(b, rootDir, filepath.Join(shortDir(b), "s"), "info")
	k.Accel = "" // kilnd chooses
	k.Args = []string{"--ec2-listen", "127.0.0.1:0"}
	if settings != "" {
		if err := os.WriteFile(k.Config, []byte(settings), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	k.Start()
	return k, openDoor(b, k)
}

// describedImages is DescribeImages' answer as a Go client of EC2 reads it (the
// fields an SDK's Image has that kiln fills).
type describedImages struct {
	RequestID string `xml:"requestId"`
	Images    []struct {
		Architecture        string `xml:"architecture"`
		CreationDate        string `xml:"creationDate"`
		ImageID             string `xml:"imageId"`
		ImageLocation       string `xml:"imageLocation"`
		ImageType           string `xml:"imageType"`
		Public              bool   `xml:"isPublic"`
		OwnerID             string `xml:"imageOwnerId"`
		PlatformDetails     string `xml:"platformDetails"`
		UsageOperation      string `xml:"usageOperation"`
		State               string `xml:"imageState"`
		BlockDeviceMappings []struct {
			DeviceName string `xml:"deviceName"`
			Ebs        *struct {
				SnapshotID          string `xml:"snapshotId"`
				VolumeSize          int64  `xml:"volumeSize"`
				DeleteOnTermination bool   `xml:"deleteOnTermination"`
				VolumeType          string `xml:"volumeType"`
				Encrypted           bool   `xml:"encrypted"`
			} `xml:"ebs"`
		} `xml:"blockDeviceMapping>item"`
		Description        string `xml:"description"`
		EnaSupport         bool   `xml:"enaSupport"`
		Hypervisor         string `xml:"hypervisor"`
		Name               string `xml:"name"`
		RootDeviceName     string `xml:"rootDeviceName"`
		RootDeviceType     string `xml:"rootDeviceType"`
		VirtualizationType string `xml:"virtualizationType"`
		BootMode           string `xml:"bootMode"`
		Tags               []struct {
			Key   string `xml:"key"`
			Value string `xml:"value"`
		} `xml:"tagSet>item"`
	} `xml:"imagesSet>item"`
	NextToken string `xml:"nextToken"`
}

// medianOf is the median of ds.
func medianOf(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// millis is d in milliseconds.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkEC2DescribeImages1k lists 1,000 images with a name filter through the EC2
// endpoint (a signed DescribeImages, its XML answer decoded as a client of EC2 decodes
// it) and, in the same run, the same filter on the socket API (kiln image ls --filter:
// its JSON decoded by kiln's client). It reports each median and the ratio of the EC2
// endpoint's to the socket's (target ≤ 2).
func BenchmarkEC2DescribeImages1k(b *testing.B) {
	// On tmpfs: the setup's 1,000 copies each commit a record.
	k, door := newEC2KilndB(b, tmpfsRoot(b), `{"quotas": {"users": {"root": {"images": 2000}}}}`)
	ctx := context.Background()
	orig := registerRandomImage(b, k, "original", 1<<20)
	const n = 1000
	for i := range n { // a copy is records only: no bytes
		im, err := k.CopyImage(ctx, orig.ID, api.CopyImageRequest{Name: fmt.Sprintf("copy-%04d", i), Description: "one of a thousand"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.WaitImage(ctx, im.ID, nil); err != nil {
			b.Fatal(err)
		}
	}
	const filter = "copy-*"
	// Each side reports its whole time (the headline) and, apart, the request (until the
	// answer's last byte is read) and the client's decoding of the answer.
	var socket, socketRequest time.Duration
	b.Run("socket", func(b *testing.B) {
		var whole, request, decode []time.Duration
		for b.Loop() {
			start := time.Now()
			list, err := k.Images(ctx, client.ListImagesOptions{Filters: []string{"name=" + filter}})
			whole = append(whole, time.Since(start))
			if err != nil || len(list) != n {
				b.Fatalf("image ls: %d images, %v", len(list), err)
			}
			start = time.Now()
			status, body, err := k.Raw(ctx, "GET", "/"+api.Version+"/images?filter=name%3D"+url.QueryEscape(filter), nil)
			request = append(request, time.Since(start))
			if err != nil || status != 200 {
				b.Fatalf("GET /images: %d, %v", status, err)
			}
			start = time.Now()
			var decoded []api.Image
			err = json.Unmarshal(body, &decoded)
			decode = append(decode, time.Since(start))
			if err != nil || len(decoded) != n {
				b.Fatalf("GET /images: %d images, %v", len(decoded), err)
			}
		}
		socket, socketRequest = medianOf(whole), medianOf(request)
		b.ReportMetric(millis(socket), "ms-median")
		b.ReportMetric(millis(socketRequest), "ms-median-request")
		b.ReportMetric(millis(medianOf(decode)), "ms-median-decode")
	})
	b.Run("ec2", func(b *testing.B) {
		var whole, request, decode []time.Duration
		for b.Loop() {
			start := time.Now()
			status, body, err := door.do(ctx, "DescribeImages", "Filter.1.Name", "name", "Filter.1.Value.1", filter)
			request = append(request, time.Since(start))
			if err != nil || status != 200 {
				b.Fatalf("DescribeImages: %d, %v\n%.500s", status, err, body)
			}
			parse := time.Now()
			var resp describedImages
			err = xml.Unmarshal(body, &resp)
			decode = append(decode, time.Since(parse))
			whole = append(whole, time.Since(start))
			if err != nil || len(resp.Images) != n || resp.Images[0].BlockDeviceMappings[0].Ebs == nil {
				b.Fatalf("DescribeImages: %d images, %v", len(resp.Images), err)
			}
		}
		b.ReportMetric(millis(medianOf(whole)), "ms-median")
		b.ReportMetric(millis(medianOf(request)), "ms-median-request")
		b.ReportMetric(millis(medianOf(decode)), "ms-median-decode")
		if socket > 0 {
			b.ReportMetric(millis(medianOf(whole))/millis(socket), "ratio-to-socket")
			b.ReportMetric(millis(medianOf(request))/millis(socketRequest), "ratio-request-to-socket")
		}
	})
}

// BenchmarkEC2RunInstances launches an instance of the test guest and waits for it to
// be running, through the EC2 endpoint (RunInstances, then DescribeInstances as `aws
// ec2 wait instance-running` does: at once, then every 100 ms) and, in the same
// iteration, as kiln run does (the socket's launch, then its wait); each is terminated
// after. It reports each median and the ratio of the EC2 endpoint's to kiln run's
// (target ≤ 1.2).
func BenchmarkEC2RunInstances(b *testing.B) {
	k, door := newEC2KilndB(b, filepath.Join(b.TempDir(), "root"), "")
	b.Cleanup(k.KillQEMUs)
	im := registerGuest(b, k, "kiln-guest")
	ctx := context.Background()
	terminate := func(id string) {
		if _, err := k.InstanceAction(ctx, id, "terminate", true); err != nil {
			b.Fatal(err)
		}
		if _, err := k.WaitInstance(guestCtx(b), id, "terminated"); err != nil {
			b.Fatalf("terminate %s: %v\n%s", id, err, k.Evidence(id))
		}
	}
	viaEC2 := func() (time.Duration, string) {
		start := time.Now()
		status, body, err := door.do(ctx, "RunInstances", "ImageId", im.ID, "InstanceType", "nano", "MinCount", "1", "MaxCount", "1")
		if err != nil || status != 200 {
			b.Fatalf("RunInstances: %d, %v\n%s", status, err, body)
		}
		var run struct {
			Instances []struct {
				ID string `xml:"instanceId"`
			} `xml:"instancesSet>item"`
		}
		if err := xml.Unmarshal(body, &run); err != nil || len(run.Instances) != 1 {
			b.Fatalf("RunInstances: %v\n%s", err, body)
		}
		id := run.Instances[0].ID
		deadline := time.Now().Add(guestDeadline)
		for {
			status, body, err := door.do(ctx, "DescribeInstances", "InstanceId.1", id)
			if err != nil || status != 200 {
				b.Fatalf("DescribeInstances: %d, %v\n%s", status, err, body)
			}
			var desc struct {
				States []string `xml:"reservationSet>item>instancesSet>item>instanceState>name"`
			}
			if err := xml.Unmarshal(body, &desc); err != nil || len(desc.States) != 1 {
				b.Fatalf("DescribeInstances: %v\n%s", err, body)
			}
			if desc.States[0] == "running" {
				return time.Since(start), id
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s not running within %s: %s\n%s", id, guestDeadline, desc.States[0], k.Evidence(id))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	viaSocket := func() (time.Duration, string) {
		start := time.Now()
		insts, err := k.RunInstances(ctx, api.RunInstancesRequest{Image: im.ID, InstanceType: "nano"})
		if err != nil || len(insts) != 1 {
			b.Fatalf("run: %v, %v", insts, err)
		}
		if _, err := k.WaitInstance(guestCtx(b), insts[0].ID, "running"); err != nil {
			b.Fatalf("wait %s running: %v\n%s", insts[0].ID, err, k.Evidence(insts[0].ID))
		}
		return time.Since(start), insts[0].ID
	}
	var ec2s, socket []time.Duration
	for b.Loop() {
		d, id := viaSocket()
		socket = append(socket, d)
		b.StopTimer()
		terminate(id)
		b.StartTimer()
		d, id = viaEC2()
		ec2s = append(ec2s, d)
		b.StopTimer()
		terminate(id)
		b.StartTimer()
	}
	b.ReportMetric(millis(medianOf(socket)), "ms-median-kiln-run")
	b.ReportMetric(millis(medianOf(ec2s)), "ms-median-ec2")
	b.ReportMetric(millis(medianOf(ec2s))/millis(medianOf(socket)), "ratio-ec2/kiln-run")
}
