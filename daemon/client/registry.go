package client

import (
	"context"
	"net/http"
	"net/url"

	"kiln/daemon/api"
)

// PushImage sends an image to a registry (kilnd does the network I/O, with the
// request's credential and CA certificates only) and answers once the registry has it.
func (c *Client) PushImage(ctx context.Context, image string, req api.PushImageRequest) (api.PushImageResult, error) {
	var out api.PushImageResult
	err := c.do(ctx, http.MethodPost, "/images/"+url.PathEscape(image)+"/push", nil, req, &out)
	return out, err
}

// PullImage fetches a kiln image from a registry and answers with the new image,
// available, once every byte is verified and every layer checked.
func (c *Client) PullImage(ctx context.Context, req api.PullImageRequest) (api.Image, error) {
	var out api.Image
	err := c.do(ctx, http.MethodPost, "/images/pull", nil, req, &out)
	return out, err
}
