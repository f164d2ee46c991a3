package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"

	"kiln/daemon/api"
)

// PushImage sends an image to a registry (kilnd does the network I/O, with the
// request's credential and CA certificates only) and answers once the registry has it.
// progress, when not nil, is called (on this goroutine) with the bytes sent so far as
// kilnd streams them (api.MediaTypeProgressStream).
func (c *Client) PushImage(ctx context.Context, image string, req api.PushImageRequest, progress func(api.Progress)) (api.PushImageResult, error) {
	var out api.PushImageResult
	err := c.stream(ctx, c.hc, "/images/"+url.PathEscape(image)+"/push", req, &out, progress)
	return out, err
}

// PullImage fetches a kiln image from a registry and answers with the new image,
// available, once every byte is verified and every layer checked. progress is as
// PushImage's, with the bytes fetched.
func (c *Client) PullImage(ctx context.Context, req api.PullImageRequest, progress func(api.Progress)) (api.Image, error) {
	var out api.Image
	err := c.stream(ctx, c.hc, "/images/pull", req, &out, progress)
	return out, err
}

// stream POSTs body to path and decodes the answer into out: a plain answer without
// progress, else a progress stream, each progress event given to progress and the
// last line the result or the error (an *api.Error, as a plain answer's).
func (c *Client) stream(ctx context.Context, hc *http.Client, path string, body, out any, progress func(api.Progress)) error {
	if progress == nil {
		return c.send(ctx, hc, http.MethodPost, path, nil, body, out)
	}
	resp, err := c.open(ctx, hc, http.MethodPost, path, url.Values{"progress": {"1"}}, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(bufio.NewReader(resp.Body))
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), api.MediaTypeProgressStream) {
		if err := dec.Decode(out); err != nil {
			return fmt.Errorf("decode POST %s answer: %w", path, err)
		}
		return nil
	}
	for {
		var ev api.StreamEvent
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("POST %s: kilnd's progress stream ended before its result: %w", path, err)
		}
		switch {
		case ev.Error != nil:
			return ev.Error
		case ev.Result != nil:
			if err := json.Unmarshal(ev.Result, out); err != nil {
				return fmt.Errorf("decode POST %s result: %w", path, err)
			}
			return nil
		case ev.Progress != nil:
			progress(*ev.Progress)
		}
	}
}

// ExportImage writes an image as an OCI image layout tar to path: the file is created
// (or truncated) here, with the caller's rights, and its descriptor passed to kilnd,
// which writes it; a failed export removes a file it created.
func (c *Client) ExportImage(ctx context.Context, image, path string) (res api.ExportImageResult, err error) {
	_, statErr := os.Lstat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0o644)
	if err != nil {
		return res, fmt.Errorf("-o: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return res, fmt.Errorf("-o %s: not a regular file: kiln exports into a file: %w", path, errdefs.ErrInvalidArgument)
	}
	defer func() {
		if err != nil && errors.Is(statErr, fs.ErrNotExist) {
			os.Remove(path)
		}
	}()
	err = c.send(ctx, c.passing([]*os.File{f}), http.MethodPost, "/images/"+url.PathEscape(image)+"/export", nil, api.ExportImageRequest{File: 0}, &res)
	return res, err
}

// ImportImage reads an OCI image layout tar at path (opened here, with the caller's
// rights, its descriptor passed to kilnd) into a new image of the caller's, with a
// pull's checks; req.File and req.Source are set here. progress is as PullImage's.
func (c *Client) ImportImage(ctx context.Context, path string, req api.ImportImageRequest, progress func(api.Progress)) (api.Image, error) {
	f, err := openRegular(path)
	if err != nil {
		return api.Image{}, err
	}
	defer f.Close()
	req.File = 0
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	req.Source = path
	var out api.Image
	err = c.stream(ctx, c.passing([]*os.File{f}), "/images/import", req, &out, progress)
	return out, err
}
