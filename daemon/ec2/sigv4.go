package ec2

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Signature Version 4, as the cloud verifies it: the request's canonical form is
// hashed, signed with a key derived from the secret, the date, the region and the
// service, and compared with the signature the request carries, in its Authorization
// header or (a presigned request) in its query.

const (
	algorithm = "AWS4-HMAC-SHA256"
	service   = "ec2"
	// maxSkew is how far a signed request's time may be from kilnd's, as the cloud's.
	maxSkew = 15 * time.Minute
	// maxExpires bounds a presigned request's X-Amz-Expires (seven days, as the cloud's).
	maxExpires = 7 * 24 * 60 * 60
	amzDate    = "20060102T150405Z"

	unsignedPayload = "UNSIGNED-PAYLOAD"
)

// signed is what a request says of its signature.
type signed struct {
	keyID, date, region string // from the credential scope
	signedHeaders       []string
	signature           string
	at                  time.Time // X-Amz-Date
	expires             int       // presigned: seconds from at; 0 otherwise
	presigned           bool
}

// parseSignature reads a request's signature: from its Authorization header, else from
// its query (a presigned request). Errors are the cloud's.
func parseSignature(r *http.Request) (signed, *Error) {
	var s signed
	var cred, headers string
	if auth := r.Header.Get("Authorization"); auth != "" {
		alg, rest, _ := strings.Cut(auth, " ")
		if alg != algorithm {
			return s, errorf(codeIncompleteSignature, "the Authorization header's algorithm is %q: kiln takes %s (Signature Version 4) only", clip(alg), algorithm)
		}
		for _, part := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			switch k {
			case "Credential":
				cred = v
			case "SignedHeaders":
				headers = v
			case "Signature":
				s.signature = v
			}
		}
		date := r.Header.Get("X-Amz-Date")
		if date == "" {
			date = r.Header.Get("Date")
		}
		t, err := time.Parse(amzDate, date)
		if err != nil {
			if t, err = http.ParseTime(date); err != nil {
				return s, errorf(codeIncompleteSignature, "the request has no X-Amz-Date (want a time such as 20261130T120000Z)")
			}
		}
		s.at = t.UTC()
	} else {
		q := r.URL.Query()
		if q.Get("X-Amz-Algorithm") == "" {
			return s, errorf(codeMissingAuthenticationToken, "the request is not signed: sign it with an access key of yours (kiln access-key create) using Signature Version 4")
		}
		if alg := q.Get("X-Amz-Algorithm"); alg != algorithm {
			return s, errorf(codeIncompleteSignature, "X-Amz-Algorithm is %q: kiln takes %s only", clip(alg), algorithm)
		}
		s.presigned = true
		cred, headers, s.signature = q.Get("X-Amz-Credential"), q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Signature")
		t, err := time.Parse(amzDate, q.Get("X-Amz-Date"))
		if err != nil {
			return s, errorf(codeIncompleteSignature, "X-Amz-Date %q: want a time such as 20261130T120000Z", clip(q.Get("X-Amz-Date")))
		}
		s.at = t.UTC()
		n, err := strconv.Atoi(q.Get("X-Amz-Expires"))
		if err != nil || n < 1 || n > maxExpires {
			return s, errorf(codeAuthFailure, "X-Amz-Expires %q: want 1 to %d seconds", clip(q.Get("X-Amz-Expires")), maxExpires)
		}
		s.expires = n
	}
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[3] != service || scope[4] != "aws4_request" {
		return s, errorf(codeIncompleteSignature, "the credential %q is not KEY-ID/DATE/REGION/ec2/aws4_request", clip(cred))
	}
	s.keyID, s.date, s.region = scope[0], scope[1], scope[2]
	if headers == "" || s.signature == "" {
		return s, errorf(codeIncompleteSignature, "the signature or its signed headers are missing")
	}
	s.signedHeaders = strings.Split(headers, ";")
	if !slices.Contains(s.signedHeaders, "host") {
		return s, errorf(codeIncompleteSignature, "the signed headers do not include host")
	}
	return s, nil
}

// checkTime refuses a request signed too long ago (or ahead), or a presigned one past
// its expiry.
func (s signed) checkTime(now time.Time) *Error {
	if s.date != s.at.Format("20060102") {
		return errorf(codeSignatureDoesNotMatch, "the credential's date %s is not the request's (%s)", clip(s.date), s.at.Format(amzDate))
	}
	if s.presigned {
		if now.After(s.at.Add(time.Duration(s.expires) * time.Second)) {
			return errorf(codeRequestExpired, "the presigned request expired at %s", s.at.Add(time.Duration(s.expires)*time.Second).Format(time.RFC3339))
		}
		if s.at.After(now.Add(maxSkew)) {
			return errorf(codeRequestExpired, "the presigned request is dated %s, more than %v ahead of this host's clock", s.at.Format(time.RFC3339), maxSkew)
		}
		return nil
	}
	if d := now.Sub(s.at); d > maxSkew || d < -maxSkew {
		return errorf(codeRequestExpired, "the request is dated %s, more than %v from this host's clock (%s): check the clock of the machine that signed it",
			s.at.Format(time.RFC3339), maxSkew, now.UTC().Format(time.RFC3339))
	}
	return nil
}

// signature computes the signature of r (whose body is body) with secret, as s says it
// was made.
func (s signed) compute(r *http.Request, body []byte, secret, payloadHash string) string {
	var canon strings.Builder
	canon.WriteString(r.Method + "\n")
	canon.WriteString(canonicalPath(r.URL.EscapedPath()) + "\n")
	canon.WriteString(canonicalQuery(r.URL.Query(), s.presigned) + "\n")
	for _, h := range s.signedHeaders {
		canon.WriteString(h + ":" + headerValue(r, h) + "\n")
	}
	canon.WriteString("\n" + strings.Join(s.signedHeaders, ";") + "\n")
	if payloadHash == "" {
		sum := sha256.Sum256(body)
		payloadHash = hex.EncodeToString(sum[:])
	}
	canon.WriteString(payloadHash)
	reqHash := sha256.Sum256([]byte(canon.String()))
	scope := s.date + "/" + s.region + "/" + service + "/aws4_request"
	toSign := algorithm + "\n" + s.at.Format(amzDate) + "\n" + scope + "\n" + hex.EncodeToString(reqHash[:])
	key := mac([]byte("AWS4"+secret), s.date)
	key = mac(key, s.region)
	key = mac(key, service)
	key = mac(key, "aws4_request")
	return hex.EncodeToString(mac(key, toSign))
}

// verify reports whether r carries s's signature made with secret. The payload is
// always the body's hash, but for a request with no body, which may say
// UNSIGNED-PAYLOAD (a presigned URL does): the Query API's parameters are in the body,
// and a body nobody signed must not choose them.
func (s signed) verify(r *http.Request, body []byte, secret string) bool {
	sum := sha256.Sum256(body)
	hashes := []string{hex.EncodeToString(sum[:])}
	switch h := r.Header.Get("X-Amz-Content-Sha256"); {
	case h == unsignedPayload || h == "" && s.presigned:
		if len(body) == 0 {
			hashes = append(hashes, unsignedPayload)
		}
	case h != "" && h != hashes[0]:
		return false // a header-signed payload hash must be the body's
	}
	want, err := hex.DecodeString(s.signature)
	if err != nil {
		return false
	}
	for _, h := range hashes {
		got, _ := hex.DecodeString(s.compute(r, body, secret, h))
		if hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

func mac(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// canonicalPath is the URI path as SigV4 for services other than S3 has it: each
// segment's escaped form escaped again.
func canonicalPath(escaped string) string {
	if escaped == "" {
		return "/"
	}
	segs := strings.Split(escaped, "/")
	for i, seg := range segs {
		segs[i] = uriEncode(seg)
	}
	return strings.Join(segs, "/")
}

// canonicalQuery is the query sorted by name then value, each part URI-encoded; a
// presigned request's signature is not part of it.
func canonicalQuery(q url.Values, presigned bool) string {
	var pairs [][2]string
	for k, vs := range q {
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, [2]string{uriEncode(k), uriEncode(v)})
		}
	}
	// By encoded name, then value: "a.b" goes after "a", whatever "=" sorts as.
	slices.SortFunc(pairs, func(a, b [2]string) int { return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1])) })
	joined := make([]string, len(pairs))
	for i, p := range pairs {
		joined[i] = p[0] + "=" + p[1]
	}
	return strings.Join(joined, "&")
}

// headerValue is a header's canonical value: its values joined by commas, each trimmed
// and with runs of spaces made one.
func headerValue(r *http.Request, name string) string {
	if name == "host" {
		return r.Host
	}
	vs := r.Header.Values(name)
	if name == "content-length" && len(vs) == 0 && r.ContentLength >= 0 {
		vs = []string{strconv.FormatInt(r.ContentLength, 10)}
	}
	for i, v := range vs {
		vs[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(vs, ",")
}

// uriEncode escapes all but RFC 3986's unreserved characters, as SigV4 asks.
func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// Sign signs r (whose body is body) for the door with Signature Version 4 in its
// Authorization header, as the SDKs do: kiln's own Go clients of the door (benchmarks,
// tests) use it; the aws CLI and the SDKs sign for themselves.
func Sign(r *http.Request, body []byte, keyID, secret, region string, at time.Time) {
	at = at.UTC()
	r.Header.Set("X-Amz-Date", at.Format(amzDate))
	s := signed{keyID: keyID, date: at.Format("20060102"), region: region, at: at, signedHeaders: []string{"host", "x-amz-date"}}
	if r.Header.Get("Content-Type") != "" {
		s.signedHeaders = []string{"content-type", "host", "x-amz-date"}
	}
	if r.Host == "" {
		r.Host = r.URL.Host
	}
	sig := s.compute(r, body, secret, "")
	r.Header.Set("Authorization", fmt.Sprintf("%s Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
		algorithm, keyID, s.date, region, service, strings.Join(s.signedHeaders, ";"), sig))
}
