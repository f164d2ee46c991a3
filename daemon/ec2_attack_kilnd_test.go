package daemon_test

import (
	"strings"
	"testing"

	"kiln/internal/kilntest"
)

// presignedInjection is run by python3 with botocore: it presigns DescribeRegions as
// generate_presigned_url does, fetches it, then sends the same URL with a form body of
// another action, which must be refused.
const presignedInjection = `
import os, urllib.request, urllib.error, boto3
c = boto3.client("ec2", endpoint_url=os.environ["KILN_EC2_ENDPOINT"])
url = c.generate_presigned_url("describe_regions", ExpiresIn=60, HttpMethod="GET")
with urllib.request.urlopen(url, timeout=30) as r:
    assert b"DescribeRegionsResponse" in r.read()
print("ok: presigned")
req = urllib.request.Request(url, data=b"Action=DescribeAccountAttributes&Version=2016-11-15", method="GET",
    headers={"Content-Type": "application/x-www-form-urlencoded"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print("accepted:", r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print("refused:", e.code, e.read().decode())
`

// TestEC2UnsignedBody: with the real clients and a real kilnd (no guest), the aws CLI's
// header-signed POSTs verify, a presigned URL works, and the same URL carrying a body of
// other parameters is refused: a body nobody signed chooses nothing.
func TestEC2UnsignedBody(t *testing.T) {
	d := newEC2Door(t, "alice")
	var regions struct{ Regions []struct{ RegionName string } }
	d.ok("alice", &regions, "describe-regions")
	if len(regions.Regions) != 1 || regions.Regions[0].RegionName != d.region {
		t.Fatalf("describe-regions: %+v", regions)
	}
	cmd := kilntest.Command(t, python3, "-c", presignedInjection)
	cmd.Env = append(d.env("alice"), "KILN_EC2_ENDPOINT="+d.endpoint, "AWS_DATA_PATH=/usr/lib/python3/dist-packages/awscli/botocore/data")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ok: presigned") || !strings.Contains(string(out), "refused: 401") || !strings.Contains(string(out), "AuthFailure") {
		t.Errorf("a presigned URL with a body of another action: %s; want it refused, 401 AuthFailure", out)
	}
}
