package oci

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Remote is a registry reference and how to reach it, for one push or pull.
type Remote struct {
	// Reference is REGISTRY/REPOSITORY[:TAG|@DIGEST]; a missing tag means "latest".
	Reference string
	// Credential is the caller's for the registry (zero: anonymous). It is used for
	// this call only.
	Credential auth.Credential
	// CACerts are PEM certificates trusted besides the system's.
	CACerts []byte
	// PlainHTTP speaks http:// instead of https://.
	PlainHTTP bool
	// UserAgent names kiln to the registry.
	UserAgent string
	// Caller is the user pushing: where an image went is recorded, and used for mounts,
	// only when it is the caller's own (another user's repositories are not its business).
	Caller string
	// Progress, when set, is told the bytes moved so far and the bytes there are to
	// move (both grow), from whichever goroutine moved them: it must be cheap and safe
	// for concurrent use.
	Progress func(done, total int64)
}

// tally counts the bytes of a push or pull for Remote.Progress.
type tally struct {
	done, total atomic.Int64
	fn          func(done, total int64)
}

func (t *tally) add(done, total int64) {
	if t.fn == nil {
		return
	}
	t.fn(t.done.Add(done), t.total.Add(total))
}

// reader counts what r reads into t.
func (t *tally) reader(r io.Reader) io.Reader {
	if t.fn == nil {
		return r
	}
	return &tallyReader{r: r, t: t}
}

type tallyReader struct {
	r io.Reader
	t *tally
}

func (r *tallyReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if n > 0 {
		r.t.add(int64(n), 0)
	}
	return n, err
}

type readCloser struct {
	io.Reader
	io.Closer
}

// repository is the registry client for r: TLS trusting the system's roots and r's
// CACerts, the credential offered only to r's registry host, timeouts on everything
// but a body that keeps moving.
func (r Remote) repository() (*remote.Repository, string, error) {
	repo, err := remote.NewRepository(r.Reference)
	if err != nil {
		return nil, "", fmt.Errorf("reference %q: %v (want REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST], e.g. localhost:5000/images/web:v1): %w",
			r.Reference, unwrapAll(err), errdefs.ErrInvalidArgument)
	}
	tag := repo.Reference.Reference
	if tag == "" {
		tag = "latest"
		repo.Reference.Reference = tag
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(r.CACerts) > 0 && !roots.AppendCertsFromPEM(r.CACerts) {
		return nil, "", fmt.Errorf("CA certificates: no PEM certificate found (--ca-file takes a PEM file such as the registry's ca.crt): %w", errdefs.ErrInvalidArgument)
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 2 * time.Minute,
		ExpectContinueTimeout: time.Second,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       30 * time.Second, // each request has its transport: none outlives it long
		ForceAttemptHTTP2:     true,
	}
	header := http.Header{}
	if r.UserAgent != "" {
		header.Set("User-Agent", r.UserAgent)
	}
	repo.Client = &auth.Client{
		Client:     &http.Client{Transport: tr},
		Header:     header,
		Cache:      auth.NewCache(),
		Credential: auth.StaticCredential(repo.Reference.Registry, r.Credential),
	}
	repo.PlainHTTP = r.PlainHTTP
	repo.MaxMetadataBytes = MaxManifestSize
	repo.SkipReferrersGC = true
	return repo, tag, nil
}

// registryError says what a failed exchange with the registry means, for the caller
// (the registry's own words; never a credential, which no error carries).
func registryError(what, ref string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: %w", what, ref, err)
	}
	var ec *errcode.ErrorResponse
	if errors.As(err, &ec) {
		switch ec.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Errorf("%s %s: the registry refused the credentials (HTTP 401): log in with kiln registry login %s: %w",
				what, ref, ec.URL.Host, errdefs.ErrPermissionDenied)
		case http.StatusForbidden:
			return fmt.Errorf("%s %s: the registry denied access (HTTP 403): %s: %w", what, ref, errorsText(ec), errdefs.ErrPermissionDenied)
		case http.StatusNotFound:
			return fmt.Errorf("%s %s: not found in the registry: %s: %w", what, ref, errorsText(ec), errdefs.ErrNotFound)
		}
		return fmt.Errorf("%s %s: the registry answered HTTP %d: %s: %w", what, ref, ec.StatusCode, errorsText(ec), errdefs.ErrUnavailable)
	}
	if errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("%s %s: not found in the registry: %w", what, ref, errdefs.ErrNotFound)
	}
	// oras-go says so in words only: a body of another length than its Content-Length,
	// a Docker-Content-Digest other than the digest asked for.
	if msg := err.Error(); strings.Contains(msg, "mismatch Content-Length") || strings.Contains(msg, "digest mismatch") {
		return fmt.Errorf("%s %s: the registry's answer is not what was asked for: %s: %w", what, ref, lastPart(msg), errdefs.ErrDataLoss)
	}
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	switch {
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return fmt.Errorf("%s %s: the registry asks for a login and kiln has no credential for %s: log in with kiln registry login %s: %w",
			what, ref, hostOf(ref), hostOf(ref), errdefs.ErrPermissionDenied)
	case errors.As(err, &ue):
		return fmt.Errorf("%s %s: the registry's certificate is signed by an authority kilnd does not trust: pass its CA with --ca-file FILE: %w", what, ref, errdefs.ErrUnavailable)
	case errors.As(err, &he):
		return fmt.Errorf("%s %s: the registry's certificate is not for this host (%v): %w", what, ref, he, errdefs.ErrUnavailable)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%s %s: the registry speaks plain HTTP: pass --plain-http if that is what you mean: %w", what, ref, errdefs.ErrUnavailable)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return fmt.Errorf("%s %s: cannot reach the registry: %v: %w", what, ref, unwrapAll(err), errdefs.ErrUnavailable)
	}
	if !errors.Is(errdefs.Resolve(err), errdefs.ErrUnknown) { // kiln's own words and class
		return fmt.Errorf("%s %s: %w", what, ref, err)
	}
	return fmt.Errorf("%s %s: %v: %w", what, ref, err, errdefs.ErrUnavailable)
}

// lastPart drops oras-go's `GET "URL": ` before its words.
func lastPart(msg string) string {
	if i := strings.LastIndex(msg, `": `); i >= 0 {
		return msg[i+3:]
	}
	return msg
}

func hostOf(ref string) string {
	if i := strings.IndexByte(ref, '/'); i > 0 {
		return ref[:i]
	}
	return ref
}

func errorsText(ec *errcode.ErrorResponse) string {
	if len(ec.Errors) == 0 {
		return http.StatusText(ec.StatusCode)
	}
	return ec.Errors.Error()
}

// unwrapAll is the innermost error's text (oras wraps errors in "METHOD URL: …").
func unwrapAll(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// stallReader fails a body that brings no byte for d: a registry that stops sending
// ends the pull instead of holding it (and the store) forever.
type stallReader struct {
	r      io.Reader
	cancel context.CancelCauseFunc
	timer  *time.Timer
	d      time.Duration
}

func newStallReader(r io.Reader, d time.Duration, cancel context.CancelCauseFunc) *stallReader {
	s := &stallReader{r: r, cancel: cancel, d: d}
	s.timer = time.AfterFunc(d, func() {
		cancel(fmt.Errorf("the registry sent nothing for %s: %w", d, errdefs.ErrUnavailable))
	})
	return s
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	switch {
	case err != nil: // the body is over: what follows (the layer's check) is not a stall
		s.timer.Stop()
	case n > 0:
		s.timer.Reset(s.d)
	}
	return n, err
}

func (s *stallReader) stop() { s.timer.Stop() }
