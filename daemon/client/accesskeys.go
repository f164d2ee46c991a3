package client

import (
	"context"
	"net/http"
	"net/url"

	"kiln/daemon/api"
)

// CreateAccessKey makes an access key of the caller's for kilnd's EC2 endpoint; the
// answer holds its secret, which is shown nowhere else.
func (c *Client) CreateAccessKey(ctx context.Context) (api.AccessKey, error) {
	var ak api.AccessKey
	err := c.do(ctx, http.MethodPost, "/access-keys", nil, nil, &ak)
	return ak, err
}

// AccessKeys lists the caller's access keys (an administrator's: everyone's), without
// their secrets.
func (c *Client) AccessKeys(ctx context.Context) ([]api.AccessKey, error) {
	var out []api.AccessKey
	err := c.do(ctx, http.MethodGet, "/access-keys", nil, nil, &out)
	return out, err
}

// DeleteAccessKey removes an access key by its id.
func (c *Client) DeleteAccessKey(ctx context.Context, id string) (string, error) {
	return c.delete(ctx, "/access-keys/"+url.PathEscape(id), id)
}
