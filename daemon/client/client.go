package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"kiln/daemon/api"
)

// Client talks to one kilnd. It is safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client of the daemon listening on socket. It does not connect yet.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns: 4,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// NewTransport returns a client that sends its requests through rt (kilnd's own EC2
// door calls its API in process this way); name stands for the socket in messages.
func NewTransport(name string, rt http.RoundTripper) *Client {
	return &Client{socket: name, hc: &http.Client{Transport: rt}}
}

// Close closes the client's idle connections to kilnd (a process that ends closes them
// anyway; one that goes on, such as a test, should).
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// DefaultSocket is the socket kiln uses when none is given: $KILN_SOCKET, else
// /run/kiln/kiln.sock for root, else $XDG_RUNTIME_DIR/kiln/kiln.sock.
func DefaultSocket() string {
	if s := os.Getenv("KILN_SOCKET"); s != "" {
		return s
	}
	if os.Geteuid() == 0 {
		return "/run/kiln/kiln.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "kiln", "kiln.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("kiln-%d", os.Getuid()), "kiln.sock")
}

// ErrDaemonUnreachable wraps a failure to reach the daemon at all.
var ErrDaemonUnreachable = errors.New("kilnd is not reachable")

// do sends a request and decodes a 2xx answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	return c.send(ctx, c.hc, method, path, query, body, out)
}

// send is do through hc.
func (c *Client) send(ctx context.Context, hc *http.Client, method, path string, query url.Values, body, out any) error {
	resp, err := c.open(ctx, hc, method, path, query, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if vb, ok := resp.Body.(api.ValueBody); ok && assign(out, vb.Value()) {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s answer: %w", method, path, err)
	}
	return nil
}

// open sends a request (body as JSON, when not nil) through hc and returns a 2xx answer,
// its body for the caller to read and close; any other answer is kilnd's error.
func (c *Client) open(ctx context.Context, hc *http.Client, method, path string, query url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := "http://kilnd/" + api.Version + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, c.unreachable(ctx, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func (c *Client) unreachable(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w at %s (is it running? start it with 'make run' or systemctl start kilnd): %v", ErrDaemonUnreachable, c.socket, err)
}

// decodeError reads an error answer into an *api.Error.
func decodeError(resp *http.Response) error {
	ae := &api.Error{}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(b, ae); err != nil || ae.Code == "" {
		return &api.Error{Code: api.CodeInternalError, Message: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))}
	}
	return ae
}

// Call sends a request to an API path (below /v1) and decodes a 2xx answer into out
// (when not nil): for callers that speak the API's routes directly (kilnd's EC2 door).
func (c *Client) Call(ctx context.Context, method, path string, query url.Values, body, out any) error {
	return c.do(ctx, method, path, query, body, out)
}

// Info returns what the daemon says of itself.
func (c *Client) Info(ctx context.Context) (api.Info, error) {
	var info api.Info
	err := c.do(ctx, http.MethodGet, "/info", nil, nil, &info)
	return info, err
}

// ListImagesOptions narrow an image listing.
type ListImagesOptions struct {
	Filters []string // KEY=PATTERN
	Owner   string   // "self", a user name, or empty for all visible
	// IncludeDeprecated lists others' deprecated images too (the caller's own always
	// are); IncludeDisabled lists the caller's disabled images.
	IncludeDeprecated bool
	IncludeDisabled   bool
}

// Images lists the images the caller may see that pass the options.
func (c *Client) Images(ctx context.Context, opts ListImagesOptions) ([]api.Image, error) {
	q := filterQuery(opts.Filters)
	if opts.Owner != "" {
		q.Set("owner", opts.Owner)
	}
	if opts.IncludeDeprecated {
		q.Set("include-deprecated", "true")
	}
	if opts.IncludeDisabled {
		q.Set("include-disabled", "true")
	}
	var out []api.Image
	err := c.do(ctx, http.MethodGet, "/images", q, nil, &out)
	return out, err
}

// Image returns the image ref names: an ami- id or a name.
func (c *Client) Image(ctx context.Context, ref string) (api.Image, error) {
	var im api.Image
	err := c.do(ctx, http.MethodGet, "/images/"+url.PathEscape(ref), nil, nil, &im)
	return im, err
}

// RegisterImage starts registering an image and returns it, pending. WaitImage waits
// for the outcome. The client opens each disk (its Name), the kernel and the initrd
// with the caller's rights and passes them to kilnd; a file the caller cannot read is
// refused here, before kilnd hears of it.
func (c *Client) RegisterImage(ctx context.Context, req api.RegisterImageRequest) (api.Image, error) {
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	open := func(flag, path string) (int, error) {
		f, err := openRegular(path)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", flag, err)
		}
		files = append(files, f)
		return len(files) - 1, nil
	}
	req.Disks = slices.Clone(req.Disks)
	for i := range req.Disks {
		n, err := open("--disk", req.Disks[i].Name)
		if err != nil {
			return api.Image{}, err
		}
		req.Disks[i].File = n
	}
	for _, bf := range []struct {
		flag, path string
		set        **int
	}{{"--kernel", req.Kernel, &req.KernelFile}, {"--initrd", req.Initrd, &req.InitrdFile}, {"--uefi-data", req.UEFIData, &req.UEFIDataFile}} {
		if bf.path == "" {
			continue
		}
		n, err := open(bf.flag, bf.path)
		if err != nil {
			return api.Image{}, err
		}
		*bf.set = &n
	}
	var im api.Image
	err := c.send(ctx, c.passing(files), http.MethodPost, "/images", nil, req, &im)
	return im, err
}

// ErrImageFailed is returned by WaitImage when the image ends failed.
var ErrImageFailed = errors.New("image failed")

// ProgressInterval is how often WaitImage asks how far an image has come when it has a
// progress function to call: four times a second, as often as a progress bar redraws.
const ProgressInterval = 250 * time.Millisecond

// WaitImage waits until the image leaves pending (the daemon answers as soon as it
// does), calling progress (when not nil) after each answer, every ProgressInterval
// while the image is pending and once with the image as it ended. A failed image
// returns ErrImageFailed with the reason.
func (c *Client) WaitImage(ctx context.Context, id string, progress func(api.Image)) (api.Image, error) {
	for {
		var im api.Image
		wait := "30s"
		if progress != nil {
			wait = ProgressInterval.String()
		}
		asked := time.Now()
		err := c.do(ctx, http.MethodGet, "/images/"+url.PathEscape(id), url.Values{"wait": {wait}}, nil, &im)
		if err != nil {
			return im, err
		}
		if progress != nil {
			progress(im)
		}
		switch im.State {
		case "available":
			return im, nil
		case "failed":
			return im, fmt.Errorf("%w: %s: %s", ErrImageFailed, im.ID, im.StateReason)
		}
		// A kilnd that answers at once while the image is pending (it makes the image no
		// more: it restarted) is asked again no sooner than ProgressInterval.
		t := time.NewTimer(ProgressInterval - time.Since(asked))
		select {
		case <-ctx.Done():
			t.Stop()
			return im, ctx.Err()
		case <-t.C:
		}
	}
}

// DeregisterImage deregisters the image: it can no longer be launched; its content is
// collected by the next GC when nothing else uses it.
func (c *Client) DeregisterImage(ctx context.Context, ref string) (string, error) {
	return c.delete(ctx, "/images/"+url.PathEscape(ref), ref)
}

// delete deletes what ref names at path and returns its id (ref itself from a kilnd
// older than that answer, which says nothing).
func (c *Client) delete(ctx context.Context, path, ref string) (string, error) {
	var d api.Deleted
	err := c.do(ctx, http.MethodDelete, path, nil, nil, &d)
	if errors.Is(err, io.EOF) {
		return ref, nil
	}
	return d.ID, err
}

// ShareImage adds users, groups or everyone (Public) to the image's launch permission.
func (c *Client) ShareImage(ctx context.Context, ref string, req api.ShareRequest) (api.Image, error) {
	var im api.Image
	err := c.do(ctx, http.MethodPost, "/images/"+url.PathEscape(ref)+"/share", nil, req, &im)
	return im, err
}

// UnshareImage removes them; instances already launched go on.
func (c *Client) UnshareImage(ctx context.Context, ref string, req api.ShareRequest) (api.Image, error) {
	var im api.Image
	err := c.do(ctx, http.MethodPost, "/images/"+url.PathEscape(ref)+"/unshare", nil, req, &im)
	return im, err
}

// GC collects content nothing references.
func (c *Client) GC(ctx context.Context) (api.GCResult, error) {
	var res api.GCResult
	err := c.do(ctx, http.MethodPost, "/gc", nil, nil, &res)
	return res, err
}

// Raw sends a request with a raw body (and files passed with it) and returns the
// status and the raw answer; it is for tests of the API's input handling.
func (c *Client) Raw(ctx context.Context, method, path string, body io.Reader, files ...*os.File) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://kilnd"+path, body)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.passing(files).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// CreateImage starts making an image of an instance's volumes and returns it, pending;
// WaitImage waits for the outcome.
func (c *Client) CreateImage(ctx context.Context, instance string, req api.CreateImageRequest) (api.Image, error) {
	var im api.Image
	err := c.do(ctx, http.MethodPost, "/instances/"+url.PathEscape(instance)+"/create-image", nil, req, &im)
	return im, err
}

// CopyImage makes a new image over the same content as image (no bytes copied).
func (c *Client) CopyImage(ctx context.Context, image string, req api.CopyImageRequest) (api.Image, error) {
	var im api.Image
	err := c.do(ctx, http.MethodPost, "/images/"+url.PathEscape(image)+"/copy", nil, req, &im)
	return im, err
}

// Snapshots lists the caller's snapshots that pass the filters (KEY=PATTERN).
func (c *Client) Snapshots(ctx context.Context, filters ...string) ([]api.Snapshot, error) {
	var out []api.Snapshot
	err := c.do(ctx, http.MethodGet, "/snapshots", filterQuery(filters), nil, &out)
	return out, err
}

// Snapshot returns one snapshot.
func (c *Client) Snapshot(ctx context.Context, id string) (api.Snapshot, error) {
	var sn api.Snapshot
	err := c.do(ctx, http.MethodGet, "/snapshots/"+url.PathEscape(id), nil, nil, &sn)
	return sn, err
}

// DeleteSnapshot deletes a snapshot no image uses.
func (c *Client) DeleteSnapshot(ctx context.Context, id string) (string, error) {
	return c.delete(ctx, "/snapshots/"+url.PathEscape(id), id)
}

// CreateVolume makes a standalone volume: blank, or from a snapshot.
func (c *Client) CreateVolume(ctx context.Context, req api.CreateVolumeRequest) (api.Volume, error) {
	var v api.Volume
	err := c.do(ctx, http.MethodPost, "/volumes", nil, req, &v)
	return v, err
}

// Volumes lists the caller's volumes that pass the filters (KEY=PATTERN).
func (c *Client) Volumes(ctx context.Context, filters ...string) ([]api.Volume, error) {
	var out []api.Volume
	err := c.do(ctx, http.MethodGet, "/volumes", filterQuery(filters), nil, &out)
	return out, err
}

// Volume returns one volume.
func (c *Client) Volume(ctx context.Context, id string) (api.Volume, error) {
	var v api.Volume
	err := c.do(ctx, http.MethodGet, "/volumes/"+url.PathEscape(id), nil, nil, &v)
	return v, err
}

// DeleteVolume deletes a volume that is not attached.
func (c *Client) DeleteVolume(ctx context.Context, id string) (string, error) {
	return c.delete(ctx, "/volumes/"+url.PathEscape(id), id)
}

// AttachVolume attaches a volume to an instance (hot-plugged when it runs).
func (c *Client) AttachVolume(ctx context.Context, id, instance, device string) (api.Volume, error) {
	var v api.Volume
	err := c.do(ctx, http.MethodPost, "/volumes/"+url.PathEscape(id)+"/attach", nil, api.AttachVolumeRequest{Instance: instance, DeviceName: device}, &v)
	return v, err
}

// DetachVolume detaches a volume from its instance.
func (c *Client) DetachVolume(ctx context.Context, id string) (api.Volume, error) {
	var v api.Volume
	err := c.do(ctx, http.MethodPost, "/volumes/"+url.PathEscape(id)+"/detach", nil, nil, &v)
	return v, err
}

// CreateKeyPair makes a key pair (its private key in the answer, once), or imports a
// public key when req.PublicKey is set.
func (c *Client) CreateKeyPair(ctx context.Context, req api.CreateKeyPairRequest) (api.KeyPair, error) {
	var kp api.KeyPair
	err := c.do(ctx, http.MethodPost, "/key-pairs", nil, req, &kp)
	return kp, err
}

// KeyPairs lists the caller's key pairs that pass the filters (KEY=PATTERN).
func (c *Client) KeyPairs(ctx context.Context, filters ...string) ([]api.KeyPair, error) {
	var out []api.KeyPair
	err := c.do(ctx, http.MethodGet, "/key-pairs", filterQuery(filters), nil, &out)
	return out, err
}

// KeyPair returns one key pair, by name or id.
func (c *Client) KeyPair(ctx context.Context, ref string) (api.KeyPair, error) {
	var kp api.KeyPair
	err := c.do(ctx, http.MethodGet, "/key-pairs/"+url.PathEscape(ref), nil, nil, &kp)
	return kp, err
}

// DeleteKeyPair removes a key pair.
func (c *Client) DeleteKeyPair(ctx context.Context, ref string) (string, error) {
	return c.delete(ctx, "/key-pairs/"+url.PathEscape(ref), ref)
}

// assign sets *out to v when v is of out's element type (an answer given in process,
// api.ValueBody), and reports whether it did.
func assign(out, v any) bool {
	dst, src := reflect.ValueOf(out), reflect.ValueOf(v)
	if dst.Kind() != reflect.Pointer || dst.IsNil() || !src.IsValid() || !src.Type().AssignableTo(dst.Elem().Type()) {
		return false
	}
	dst.Elem().Set(src)
	return true
}
