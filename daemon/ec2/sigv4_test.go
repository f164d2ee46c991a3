package ec2

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"kiln/daemon/api"
)

// signedRequest is a POST of form signed at at with the key.
func signedRequest(t *testing.T, form url.Values, at time.Time, secret string) (*http.Request, []byte) {
	t.Helper()
	body := []byte(form.Encode())
	r, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:8773/", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	Sign(r, body, "AKIAEXAMPLE", secret, api.DefaultRegion, at)
	return r, body
}

// TestSignature: a request signed with the secret verifies; one whose body, headers,
// time or key differ does not; times too far off are RequestExpired.
func TestSignature(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	form := url.Values{"Action": {"DescribeImages"}, "Version": {APIVersion}, "Owner.1": {"self"}}
	r, body := signedRequest(t, form, now, "secret")
	s, e := parseSignature(r)
	if e != nil {
		t.Fatal(e)
	}
	if e := s.checkTime(now.Add(time.Minute)); e != nil {
		t.Fatal(e)
	}
	if !s.verify(r, body, "secret") {
		t.Fatal("a signed request does not verify")
	}
	if s.verify(r, body, "other") {
		t.Error("verified with another secret")
	}
	tampered := []byte(strings.Replace(string(body), "self", "alice", 1))
	if s.verify(r, tampered, "secret") {
		t.Error("verified with another body")
	}
	r.Header.Set("Content-Type", "text/plain")
	if s.verify(r, body, "secret") {
		t.Error("verified with a signed header changed")
	}
	for _, off := range []time.Duration{16 * time.Minute, -16 * time.Minute} {
		if e := s.checkTime(now.Add(off)); e == nil || e.Code != codeRequestExpired {
			t.Errorf("checked %v off: %v; want RequestExpired", off, e)
		}
	}
}

// TestSignatureRefusals: what is not a SigV4 request is refused with EC2's codes.
func TestSignatureRefusals(t *testing.T) {
	for _, c := range []struct {
		name, auth, code string
	}{
		{"none", "", codeMissingAuthenticationToken},
		{"sigv2", "AWS AKIA:abc", codeIncompleteSignature},
		{"no scope", "AWS4-HMAC-SHA256 Credential=AKIA, SignedHeaders=host, Signature=00", codeIncompleteSignature},
		{"other service", "AWS4-HMAC-SHA256 Credential=AKIA/20261130/kiln-local-1/s3/aws4_request, SignedHeaders=host, Signature=00", codeIncompleteSignature},
		{"host unsigned", "AWS4-HMAC-SHA256 Credential=AKIA/20261130/kiln-local-1/ec2/aws4_request, SignedHeaders=x-amz-date, Signature=00", codeIncompleteSignature},
	} {
		r, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:8773/?Action=DescribeRegions", nil)
		r.Header.Set("X-Amz-Date", "20261130T120000Z")
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		if _, e := parseSignature(r); e == nil || e.Code != c.code {
			t.Errorf("%s: %v; want %s", c.name, e, c.code)
		}
	}
}

// TestParams: lists, structures, filters and tag specifications as the SDKs send them.
func TestParams(t *testing.T) {
	p := params{"ImageId.2": "ami-b", "ImageId.1": "ami-a", "Filter.1.Name": "name", "Filter.1.Value.1": "web-*",
		"Filter.1.Value.2": "db-*", "TagSpecification.1.ResourceType": "instance", "TagSpecification.1.Tag.1.Key": "k",
		"TagSpecification.1.Tag.1.Value": "v", "DryRun": "true", "MaxResults": "7"}
	if got := strings.Join(p.values("ImageId"), ","); got != "ami-a,ami-b" {
		t.Errorf("values: %s", got)
	}
	fs, e := p.filters()
	if e != nil || len(fs) != 1 || fs[0].Name != "name" || strings.Join(fs[0].Values, ",") != "web-*,db-*" {
		t.Errorf("filters: %+v %v", fs, e)
	}
	specs, e := p.tagSpecs("instance", "volume")
	if e != nil || specs["instance"]["k"] != "v" {
		t.Errorf("tagSpecs: %v %v", specs, e)
	}
	if _, e := p.tagSpecs("volume"); e == nil {
		t.Error("a tag specification of a type the action does not make was taken")
	}
	if e := p.only([]string{"ImageId", "Filter", "TagSpecification"}); e == nil || e.Code != codeUnknownParameter {
		t.Errorf("only: %v; want UnknownParameter for MaxResults", e)
	}
	if n, e := p.integer("MaxResults", 0, 5, 1000); n != 7 || e != nil {
		t.Errorf("integer: %d %v", n, e)
	}
	if _, e := p.integer("MaxResults", 0, 8, 1000); e == nil {
		t.Error("7 taken for at least 8")
	}
}

// TestPage: pages cover every item once, in id order, whatever the order given.
func TestPage(t *testing.T) {
	items := []string{"e", "a", "d", "c", "b", "g", "f"}
	var got []string
	p := params{"MaxResults": "3"}
	for pages := 0; ; pages++ {
		pg, next, e := page(p, append([]string(nil), items...), func(s string) string { return s }, 1, 10)
		if e != nil || pages > 5 {
			t.Fatal(e, pages)
		}
		got = append(got, pg...)
		if next == "" {
			break
		}
		p["NextToken"] = next
	}
	if strings.Join(got, "") != "abcdefg" {
		t.Errorf("pages gave %v", got)
	}
	if _, _, e := page(params{"NextToken": "!!"}, items, func(s string) string { return s }, 1, 10); e == nil || e.Code != codeInvalidPaginationToken {
		t.Errorf("a bad token: %v", e)
	}
}

// TestListenAddress: a bare port listens on loopback; any other address as given.
func TestListenAddress(t *testing.T) {
	for in, want := range map[string]string{"8773": "127.0.0.1:8773", ":8773": "127.0.0.1:8773", "0.0.0.0:8773": "0.0.0.0:8773",
		"[::1]:8773": "[::1]:8773", "127.0.0.1:0": "127.0.0.1:0", "::1": "::1"} {
		if got := ListenAddress(in); got != want {
			t.Errorf("ListenAddress(%q) = %q; want %q", in, got, want)
		}
	}
}
