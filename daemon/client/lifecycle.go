package client

import (
	"context"
	"net/http"
	"net/url"

	"kiln/daemon/api"
)

// imageAction posts body to the image's action and returns the image as it is then.
func (c *Client) imageAction(ctx context.Context, ref, action string, body any) (api.Image, error) {
	var im api.Image
	err := c.do(ctx, http.MethodPost, "/images/"+url.PathEscape(ref)+"/"+action, nil, body, &im)
	return im, err
}

// DeprecateImage deprecates the image at req.At, or cancels its deprecation.
func (c *Client) DeprecateImage(ctx context.Context, ref string, req api.DeprecateRequest) (api.Image, error) {
	return c.imageAction(ctx, ref, "deprecate", req)
}

// DisableImage disables the image: no launches, no sharing, seen by its owner only.
func (c *Client) DisableImage(ctx context.Context, ref string) (api.Image, error) {
	return c.imageAction(ctx, ref, "disable", struct{}{})
}

// EnableImage makes a disabled image available again (not shared).
func (c *Client) EnableImage(ctx context.Context, ref string) (api.Image, error) {
	return c.imageAction(ctx, ref, "enable", struct{}{})
}

// ProtectImage turns deregistration protection on, with the 24 h cooldown or not.
func (c *Client) ProtectImage(ctx context.Context, ref string, cooldown bool) (api.Image, error) {
	return c.imageAction(ctx, ref, "protect", api.ProtectRequest{Cooldown: cooldown})
}

// UnprotectImage turns deregistration protection off (after the cooldown, if it has one).
func (c *Client) UnprotectImage(ctx context.Context, ref string) (api.Image, error) {
	return c.imageAction(ctx, ref, "unprotect", struct{}{})
}

// RestoreImage takes an image out of the recycle bin.
func (c *Client) RestoreImage(ctx context.Context, ref string) (api.Image, error) {
	return c.imageAction(ctx, ref, "restore", struct{}{})
}

// RestoreSnapshot takes a snapshot out of the recycle bin.
func (c *Client) RestoreSnapshot(ctx context.Context, ref string) (api.Snapshot, error) {
	var sn api.Snapshot
	err := c.do(ctx, http.MethodPost, "/snapshots/"+url.PathEscape(ref)+"/restore", nil, struct{}{}, &sn)
	return sn, err
}

// Deregister deregisters the image and says whether the recycle bin keeps it, and
// until when (DeregisterImage says only its id).
func (c *Client) Deregister(ctx context.Context, ref string) (api.Deleted, error) {
	var d api.Deleted
	err := c.do(ctx, http.MethodDelete, "/images/"+url.PathEscape(ref), nil, nil, &d)
	return d, err
}

// DeleteSnapshotBin deletes the snapshot and says whether the recycle bin keeps it,
// and until when.
func (c *Client) DeleteSnapshotBin(ctx context.Context, ref string) (api.Deleted, error) {
	var d api.Deleted
	err := c.do(ctx, http.MethodDelete, "/snapshots/"+url.PathEscape(ref), nil, nil, &d)
	return d, err
}

// RecycleBin lists the caller's images and snapshots in the recycle bin.
func (c *Client) RecycleBin(ctx context.Context) (api.RecycleBin, error) {
	var out api.RecycleBin
	err := c.do(ctx, http.MethodGet, "/recycle-bin", nil, nil, &out)
	return out, err
}

// CreateRule makes a recycle bin retention rule.
func (c *Client) CreateRule(ctx context.Context, req api.CreateRuleRequest) (api.Rule, error) {
	var r api.Rule
	err := c.do(ctx, http.MethodPost, "/recycle-bin/rules", nil, req, &r)
	return r, err
}

// Rules lists the caller's recycle bin rules.
func (c *Client) Rules(ctx context.Context) ([]api.Rule, error) {
	var out []api.Rule
	err := c.do(ctx, http.MethodGet, "/recycle-bin/rules", nil, nil, &out)
	return out, err
}

// Rule returns the rule ref names (its id or the start of it).
func (c *Client) Rule(ctx context.Context, ref string) (api.Rule, error) {
	var r api.Rule
	err := c.do(ctx, http.MethodGet, "/recycle-bin/rules/"+url.PathEscape(ref), nil, nil, &r)
	return r, err
}

// DeleteRule deletes a rule that is not locked.
func (c *Client) DeleteRule(ctx context.Context, ref string) (string, error) {
	return c.delete(ctx, "/recycle-bin/rules/"+url.PathEscape(ref), ref)
}

// UnlockRule starts a locked rule's unlock delay.
func (c *Client) UnlockRule(ctx context.Context, ref string) (api.Rule, error) {
	var r api.Rule
	err := c.do(ctx, http.MethodPost, "/recycle-bin/rules/"+url.PathEscape(ref)+"/unlock", nil, struct{}{}, &r)
	return r, err
}
