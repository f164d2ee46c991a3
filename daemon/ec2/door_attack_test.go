package ec2

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"kiln/daemon/api"
	"kiln/daemon/record"
)

// The door's answers to requests that try to act beyond what their signature covers.
// Each runs the whole ServeHTTP with real signatures; the actions asked for
// (DescribeRegions, DescribeAccountAttributes) need nothing of kiln's API.

const (
	attackKeyID  = "AKIAATTACKTEST000000"
	attackSecret = "attack-test-secret"
)

// attackDoor is a door whose one access key is root's (uid 0, which every host has),
// recorded under owner.
func attackDoor(t *testing.T, owner string, now time.Time) *Server {
	t.Helper()
	keys := &Keys{byID: map[string]record.AccessKey{attackKeyID: {ID: attackKeyID, Secret: attackSecret, OwnerID: owner, UID: 0}}}
	return New(Config{API: http.NotFoundHandler(), Keys: keys, Now: func() time.Time { return now }})
}

// presign makes a presigned GET URL of form for a door at 127.0.0.1:8773, as botocore's
// generate_presigned_url does (the payload UNSIGNED-PAYLOAD).
func presign(t *testing.T, form url.Values, at time.Time) string {
	t.Helper()
	return presignFor(t, "http://127.0.0.1:8773", form, at)
}

func serveDoor(s *Server, r *http.Request) (int, string) {
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

// TestPresignedBodyIsNotSigned: a presigned URL signs its query only (its payload is
// UNSIGNED-PAYLOAD): whoever holds the URL must not be able to add a body of other
// parameters (another Action) and have it run as the URL's signer.
func TestPresignedBodyIsNotSigned(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	door := attackDoor(t, "root", now)
	u := presign(t, url.Values{"Action": {"DescribeRegions"}, "Version": {APIVersion}}, now)

	r := httptest.NewRequest(http.MethodGet, u, nil)
	if code, body := serveDoor(door, r); code != http.StatusOK || !strings.Contains(body, "DescribeRegionsResponse") {
		t.Fatalf("the presigned URL as made: %d %s", code, body)
	}

	injected := url.Values{"Action": {"DescribeAccountAttributes"}, "Version": {APIVersion}}.Encode()
	r = httptest.NewRequest(http.MethodGet, u, strings.NewReader(injected))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	code, body := serveDoor(door, r)
	if code == http.StatusOK || strings.Contains(body, "DescribeAccountAttributesResponse") {
		t.Fatalf("a presigned URL with an unsigned body of other parameters was answered: %d %s", code, body)
	}
	if !strings.Contains(body, codeAuthFailure) {
		t.Errorf("a presigned URL with an unsigned body: %d %s; want AuthFailure", code, body)
	}
}

// TestHeaderSignedUnsignedPayload: a request signed in its Authorization header with
// X-Amz-Content-Sha256: UNSIGNED-PAYLOAD has a body nobody signed; the Query API's
// parameters are in that body, so it is refused (EC2 hashes the body itself).
func TestHeaderSignedUnsignedPayload(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	door := attackDoor(t, "root", now)
	body := url.Values{"Action": {"DescribeAccountAttributes"}, "Version": {APIVersion}}.Encode()
	r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8773/", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
	r.Header.Set("X-Amz-Date", now.Format(amzDate))
	s := signed{keyID: attackKeyID, date: now.Format("20060102"), region: api.DefaultRegion, at: now, signedHeaders: []string{"content-type", "host", "x-amz-date"}}
	sig := s.compute(r, nil, attackSecret, unsignedPayload)
	r.Header.Set("Authorization", algorithm+" Credential="+attackKeyID+"/"+s.date+"/"+api.DefaultRegion+"/ec2/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="+sig)
	if code, out := serveDoor(door, r); code == http.StatusOK {
		t.Fatalf("a header-signed request with an unsigned body was answered: %d %s", code, out)
	}
}

// TestKeyOfReusedUID: an access key acts as the user who made it; when that user is
// gone and its uid is another's now, the key is nobody's (it does not become the new
// user's).
func TestKeyOfReusedUID(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	r := httptest.NewRequest(http.MethodGet, presign(t, url.Values{"Action": {"DescribeRegions"}, "Version": {APIVersion}}, now), nil)
	// uid 0 is root's; the key says it was made by a user of that uid named otherwise.
	code, body := serveDoor(attackDoor(t, "alice-who-left", now), r)
	if code != http.StatusUnauthorized || !strings.Contains(body, codeAuthFailure) {
		t.Fatalf("a key made by alice-who-left, uid now root's: %d %s; want 401 AuthFailure", code, body)
	}
}

// TestSlowBodiesHoldNoSlots: requests whose bodies never come (anyone can send them,
// signed or not) must not take the slots of signed requests.
func TestSlowBodiesHoldNoSlots(t *testing.T) {
	now := time.Now()
	door := attackDoor(t, "root", now)
	srv := httptest.NewServer(door)
	defer srv.Close()
	var stalled []io.Closer
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	for range maxInFlight + 1 {
		pr, pw := io.Pipe()
		stalled = append(stalled, pw)
		req, err := http.NewRequest(http.MethodPost, srv.URL, pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = 100
		go http.DefaultClient.Do(req)
	}
	time.Sleep(200 * time.Millisecond)
	u := presignFor(t, srv.URL, url.Values{"Action": {"DescribeRegions"}, "Version": {APIVersion}}, now)
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("a signed request behind %d stalled ones: %v", maxInFlight+1, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a signed request behind stalled ones: %s", resp.Status)
	}
}

// presignFor is presign for a door at base (scheme://host:port).
func presignFor(t *testing.T, base string, form url.Values, at time.Time) string {
	t.Helper()
	at = at.UTC()
	s := signed{keyID: attackKeyID, date: at.Format("20060102"), region: api.DefaultRegion, at: at, signedHeaders: []string{"host"}, presigned: true}
	q := url.Values{}
	for k, v := range form {
		q[k] = v
	}
	q.Set("X-Amz-Algorithm", algorithm)
	q.Set("X-Amz-Credential", attackKeyID+"/"+s.date+"/"+api.DefaultRegion+"/"+service+"/aws4_request")
	q.Set("X-Amz-Date", at.Format(amzDate))
	q.Set("X-Amz-Expires", "3600")
	q.Set("X-Amz-SignedHeaders", "host")
	u := base + "/?" + q.Encode()
	r, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u + "&X-Amz-Signature=" + s.compute(r, nil, attackSecret, unsignedPayload)
}

// TestTokenLocksAreLetGo: the lock of a client token lives while requests with it run,
// not for ever (each new token a caller sends would otherwise stay in memory).
func TestTokenLocksAreLetGo(t *testing.T) {
	bdb, err := record.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	db, err := record.Open(bdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	tk := newTokens(db, time.Now)
	for i := range 100 {
		c := &call{action: "RunInstances", p: params{"ClientToken": "token-" + strconv.Itoa(i), "ImageId": "ami-x"}}
		ids, e := tk.once(c, func() ([]string, *Error) {
			if i%2 == 0 {
				return nil, errorf(codeInvalidParameterValue, "a launch that fails")
			}
			return []string{"i-" + strconv.Itoa(i)}, nil
		})
		if i%2 == 1 && (e != nil || len(ids) != 1) {
			t.Fatalf("once: %v %v", ids, e)
		}
	}
	c := &call{action: "RunInstances", p: params{"ClientToken": "token-1", "ImageId": "ami-x"}}
	if ids, e := tk.once(c, func() ([]string, *Error) { t.Fatal("made twice"); return nil, nil }); e != nil || ids[0] != "i-1" {
		t.Fatalf("the same token again: %v %v", ids, e)
	}
	if n := len(tk.in); n != 0 {
		t.Errorf("%d token locks kept after their requests ended", n)
	}
}

// TestLaunchVolumeTypeChecked: a launch's volumes take the types CreateVolume takes;
// another (io2, with its promise of provisioned IOPS) is refused, not ignored.
func TestLaunchVolumeTypeChecked(t *testing.T) {
	door := attackDoor(t, "root", time.Now())
	base := params{"ImageId": "ami-0123456789abcdef0", "MinCount": "1", "MaxCount": "1", "BlockDeviceMapping.1.DeviceName": "/dev/sdb",
		"BlockDeviceMapping.1.Ebs.VolumeSize": "2"}
	for _, vt := range []string{"io2", "sc1", "nonsense"} {
		p := params{"BlockDeviceMapping.1.Ebs.VolumeType": vt}
		for k, v := range base {
			p[k] = v
		}
		_, e := runInstances(&call{ctx: context.Background(), p: p, s: door, action: "RunInstances"})
		if e == nil || e.Code != codeInvalidParameterValue {
			t.Errorf("Ebs.VolumeType %s: %v; want InvalidParameterValue", vt, e)
		}
	}
}

// TestParameterInQueryAndBody: a parameter both in the query and in the body is given
// twice, as one given twice in either.
func TestParameterInQueryAndBody(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8773/?Action=DescribeImages", strings.NewReader("Action=TerminateInstances"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if p, e := parseParams(r, []byte("Action=TerminateInstances"), false); e == nil || e.Code != codeInvalidParameter {
		t.Errorf("Action in the query and the body: %v %v; want InvalidParameter", p, e)
	}
}

// TestMaxResultsAsEC2: ids and MaxResults together are InvalidParameterCombination
// where EC2 says so; DescribeVolumes and DescribeSnapshots take more than their most
// as their most.
func TestMaxResultsAsEC2(t *testing.T) {
	door := attackDoor(t, "root", time.Now())
	for name, run := range map[string]struct {
		f func(*call) (answer, *Error)
		p params
	}{
		"DescribeInstanceStatus": {describeInstanceStatus, params{"InstanceId.1": "i-0123456789abcdef0", "MaxResults": "5"}},
		"DescribeVolumes":        {describeVolumes, params{"VolumeId.1": "vol-0123456789abcdef0", "MaxResults": "5"}},
		"DescribeSnapshots":      {describeSnapshots, params{"SnapshotId.1": "snap-0123456789abcdef0", "MaxResults": "5"}},
	} {
		if _, e := run.f(&call{ctx: context.Background(), p: run.p, s: door, action: name}); e == nil || e.Code != codeInvalidParameterCombo {
			t.Errorf("%s with ids and MaxResults: %v; want InvalidParameterCombination", name, e)
		}
	}
	p := params{"MaxResults": "2000"}
	p.capAt("MaxResults", 1000)
	if n, e := p.integer("MaxResults", 0, 5, 1000); n != 1000 || e != nil {
		t.Errorf("MaxResults 2000 capped at 1000: %d %v", n, e)
	}
}
